"""Raw Gunicorn command lines read as Gunicorn's argparse reads them, and redaction of everything shown to a person."""

from __future__ import annotations

import pytest

from datadog_checks.gunicorn.sources.cmdline import entry_index, parse_gunicorn
from datadog_checks.gunicorn.sources.redaction import REDACTED, redact, redacted_command

VENV = '/srv/app/venv/bin'


@pytest.mark.parametrize(
    'argv, entry',
    [
        (['gunicorn', 'app:app'], 1),
        (['/usr/bin/gunicorn3', 'app:app'], 1),
        ([VENV + '/python3', VENV + '/gunicorn', '-w', '2', 'app:app'], 2),  # a shebang script, as the kernel runs it
        (['python3.12', '-m', 'gunicorn', 'app:app'], 3),
        (['python', '-u', '-X', 'dev', '-m', 'gunicorn.app.wsgiapp', 'app:app'], 6),
        (['python3', '-mgunicorn', 'app:app'], 2),
        (['pypy3', VENV + '/gunicorn', 'app:app'], 2),
        (['python3', '-c', 'import gunicorn'], None),
        (['python3', '-m', 'uvicorn', 'app:app'], None),
        (['python3', 'manage.py', 'runserver'], None),
        (['uv', 'run', 'gunicorn', 'app:app'], None),  # uv forks the real Gunicorn: the child is the master
        (['gunicorn: master [web]', '', ''], None),  # a title, not a command line
        (['gunicorn: worker [x/gunicorn]'], None),
        ([], None),
    ],
)
def test_what_runs_gunicorn(argv, entry):
    assert entry_index(argv) == entry


@pytest.mark.parametrize(
    'args, name, app, proc_name',
    [
        (['-w', '2', 'app:app'], None, 'app:app', 'app:app'),
        (['-n', 'web', 'app:app'], 'web', 'app:app', 'web'),
        (['--name', 'web', 'app:app'], 'web', 'app:app', 'web'),
        (['--name=web', 'app:app'], 'web', 'app:app', 'web'),
        (['-nweb', 'app:app'], 'web', 'app:app', 'web'),
        (['-n=web', 'app:app'], 'web', 'app:app', 'web'),
        (['--na', 'web', 'app:app'], 'web', 'app:app', 'web'),  # argparse's unique-prefix abbreviation
        (['-n', 'first', '-n', 'last', 'app:app'], 'last', 'app:app', 'last'),  # the last occurrence wins
        (['--name', 'my app: v2/[blue]', 'proj.wsgi:application'], 'my app: v2/[blue]', 'proj.wsgi:application', None),
        (['app:app', '-b', '0.0.0.0:8000', '--preload'], None, 'app:app', 'app:app'),
        (['--preload', '--reuse-port', '-D', 'app:app'], None, 'app:app', 'app:app'),  # flags take no value
        (['-DR', 'app:app'], None, 'app:app', 'app:app'),  # bundled short flags
        (['--proxy-protocol', 'app:app'], None, 'app:app', 'app:app'),  # 27.0's optional MODE is not the app
        (['--proxy-protocol', 'v2', 'app:app'], None, 'app:app', 'app:app'),
        (['--paste', '/etc/app.ini'], None, '/etc/app.ini', '/etc/app.ini'),
        (['-c', 'gunicorn.conf.py'], None, None, 'gunicorn'),  # app and name set in the file: not visible here
        (['--', '-app-'], None, '-app-', '-app-'),
        (['-w'], None, None, 'gunicorn'),  # truncated: nothing to crash on
    ],
)
def test_name_and_app(args, name, app, proc_name):
    command = parse_gunicorn([VENV + '/python', VENV + '/gunicorn', *args])
    assert command is not None
    assert command.name == name
    assert command.app == app
    assert command.proc_name == (proc_name or name)


def test_options_that_describe_the_server():
    command = parse_gunicorn(
        ['gunicorn', '-k', 'gthread', '--threads=4', '-p', '/run/web.pid', '--dirty-app', 'dirty:Tasks', 'app:app']
    )
    assert command.worker_class == 'gthread'
    assert command.threads == 4
    assert command.pid_file == '/run/web.pid'
    assert command.declares_dirty_apps
    assert not parse_gunicorn(['gunicorn', 'app:app']).declares_dirty_apps
    assert parse_gunicorn(['gunicorn', '--threads', 'many', 'app:app']).threads is None


def test_the_same_server_whatever_the_interpreter_path():
    # USR2 re-executes `sys.executable` + sys.argv, which may name the interpreter differently from the shebang.
    first = parse_gunicorn(['/usr/bin/python3', VENV + '/gunicorn', '-n', 'web', 'app:app'])
    upgraded = parse_gunicorn([VENV + '/python3.12', VENV + '/gunicorn', '-n', 'web', 'app:app'])
    other = parse_gunicorn([VENV + '/python3.12', VENV + '/gunicorn', '-n', 'api', 'app:app'])
    assert first.args == upgraded.args != other.args


@pytest.mark.parametrize(
    'argv, hidden, kept',
    [
        (['--password=hunter2'], ['hunter2'], ['--password=']),
        (['--password', 'hunter2', 'app:app'], ['hunter2'], ['app:app']),
        (['--db-password', 'hunter2'], ['hunter2'], ['--db-password']),
        (['--api-key', 'abc123'], ['abc123'], []),
        (['--auth-token=abc123'], ['abc123'], []),
        (['-e', 'SECRET_KEY=s3cr3t'], ['s3cr3t'], ['SECRET_KEY=']),
        (['-eDJANGO_SECRET_KEY=s3cr3t'], ['s3cr3t'], ['-eDJANGO_SECRET_KEY=']),
        (['-e=API_TOKEN=s3cr3t'], ['s3cr3t'], []),
        (['--env', 'AWS_ACCESS_KEY_ID=AKIAXXXX'], ['AKIAXXXX'], []),
        (['--env=SENTRY_DSN=https://k3y@o1.ingest.sentry.io/1'], ['k3y'], []),
        (['postgres://user:secret@db:5432/app'], ['secret', 'user:'], ['@db:5432/app']),
        (['-e', 'DATABASE_URL=postgres://user:p@ss@db/app'], ['p@ss', 'user'], ['db/app']),
        (['redis://:hunter2@cache:6379/0'], ['hunter2'], ['cache:6379']),
        (['https://api.example.com/hook?token=abc123&x=1'], ['abc123'], ['x=1']),
        (['Authorization: Bearer eyJhbGciOi'], ['eyJhbGciOi'], ['Authorization: Bearer']),
        (['PGPASSWORD=hunter2'], ['hunter2'], ['PGPASSWORD=']),
    ],
)
def test_secrets_are_redacted(argv, hidden, kept):
    shown = ' '.join(redact(argv))
    for secret in hidden:
        assert secret not in shown
    for text in kept:
        assert text in shown
    assert REDACTED in shown


@pytest.mark.parametrize(
    'argv',
    [
        ['gunicorn', '-w', '4', '-b', '0.0.0.0:8000', '--statsd-host', 'localhost:8125', 'app:app'],
        ['gunicorn', '--keyfile', '/etc/ssl/app.key', '--certfile', '/etc/ssl/app.crt', 'app:app'],
        ['gunicorn', '--dogstatsd-tags', 'env:prod', '-e', 'DJANGO_SETTINGS_MODULE=proj.settings', 'app:app'],
        ['gunicorn', '--forwarded-allow-ips=*', '--access-logfile', '-', 'proj.wsgi:application'],
        ['gunicorn', 'https://example.com/path?page=2'],
    ],
)
def test_harmless_command_lines_are_unchanged(argv):
    assert redact(argv) == argv


def test_a_secret_option_followed_by_an_option_hides_nothing_else():
    assert redact(['--no-auth', '--preload', 'app:app']) == ['--no-auth', '--preload', 'app:app']


def test_redacted_command_is_quoted_and_bounded():
    text = redacted_command(['gunicorn', '-n', 'my app', '--password=x', 'app:app'])
    assert text == "gunicorn -n 'my app' '--password=%s' app:app" % REDACTED
    assert len(redacted_command(['gunicorn', 'x' * 1000], max_chars=50)) == 50
