"""What a process title says about a Gunicorn process."""

from __future__ import annotations

import pytest

from datadog_checks.gunicorn.sources.titles import Role, base_name, belongs_to, is_master_of, parse_title


@pytest.mark.parametrize(
    'title, role, name',
    [
        ('gunicorn: master [app]', Role.MASTER, 'app'),
        ('gunicorn: worker [app]', Role.WORKER, 'app'),
        ('gunicorn: dirty-arbiter', Role.DIRTY_ARBITER, None),
        ('gunicorn: dirty-worker [app]', Role.DIRTY_WORKER, 'app'),
        ('gunicorn: master [my app]', Role.MASTER, 'my app'),
        ('gunicorn: master [proj.wsgi:application]', Role.MASTER, 'proj.wsgi:application'),
        ('gunicorn: master [/srv/app/paste.ini]', Role.MASTER, '/srv/app/paste.ini'),
        ('gunicorn: master [a [b] c]', Role.MASTER, 'a [b] c'),
        ('gunicorn: master [app.2]', Role.MASTER, 'app.2'),
    ],
)
def test_titles(title, role, name):
    parsed = parse_title(title)
    assert parsed is not None
    assert (parsed.role, parsed.name) == (role, name)


@pytest.mark.parametrize(
    'title',
    [
        '',
        'gunicorn',
        '/venv/bin/python /venv/bin/gunicorn app:app',
        'gunicorn: master',
        'xgunicorn: master [a]',
        'gunicorn: master [a] ',
        'gunicorn: something [a]',
    ],
)
def test_not_gunicorn_titles(title):
    assert parse_title(title) is None


def test_membership_includes_the_upgrade_suffix_only():
    assert is_master_of(parse_title('gunicorn: master [app]'), 'app')
    assert is_master_of(parse_title('gunicorn: master [app.2]'), 'app')
    assert not is_master_of(parse_title('gunicorn: master [app2]'), 'app')
    assert not is_master_of(parse_title('gunicorn: master [other]'), 'app')
    assert not is_master_of(parse_title('gunicorn: worker [app]'), 'app')
    assert not is_master_of(None, 'app')
    assert belongs_to(parse_title('gunicorn: worker [app.2]'), 'app')
    assert base_name('app.2') == 'app' and base_name('app') == 'app' and base_name(None) is None
