from __future__ import annotations

import pytest

from datadog_checks.gunicorn.classify import (
    Role,
    WorkerCounts,
    WorkerModel,
    base_name,
    combine_working,
    count_working,
    is_master_of,
    is_worker_of,
    parse_title,
    worker_model,
)


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
    assert is_worker_of(parse_title('gunicorn: worker [app.2]'), 'app')
    assert not is_worker_of(parse_title('gunicorn: dirty-worker [app]'), 'app')
    assert base_name('app.2') == 'app' and base_name('app') == 'app' and base_name(None) is None


def test_count_working_uses_the_threshold_and_ignores_half_sampled_workers():
    before = {1: 0, 2: 100, 3: 5000, 4: 0}
    after = {1: 999, 2: 100 + 1000, 3: 5000, 5: 10**9}  # 4 exited during the window, 5 appeared
    assert count_working(before, after, min_cpu_ns=1000) == WorkerCounts(working=1, idle=2)
    assert count_working({}, {}, 1) == WorkerCounts(0, 0)
    assert WorkerCounts(2, 3).total == 5
    assert count_working(before, after, min_cpu_ns=1000).working_pids == {2}


SYNC, CONCURRENT = WorkerModel.SYNC, WorkerModel.CONCURRENT


@pytest.mark.parametrize(
    'worker_class, threads, worker_threads, event_loop, model',
    [
        # Gunicorn's own configuration decides when the control socket gave it.
        ('sync', 1, [5], True, SYNC),
        ('sync', None, [1], False, SYNC),
        ('sync', 4, [1], False, CONCURRENT),  # sync with --threads > 1 is gthread
        ('gthread', 1, [1], False, CONCURRENT),
        ('gevent', None, [1], False, CONCURRENT),
        ('uvicorn.workers.UvicornWorker', None, [1], False, CONCURRENT),
        # Otherwise what the workers show.
        (None, None, [1, 1, 1], False, SYNC),
        (None, None, [], False, SYNC),
        (None, None, [1, 5, 1], False, CONCURRENT),  # one gthread worker that started its pool
        (None, None, [1, 1], True, CONCURRENT),  # an epoll instance: gevent, asyncio, tornado
    ],
)
def test_worker_model(worker_class, threads, worker_threads, event_loop, model):
    assert worker_model(worker_class, threads, worker_threads, event_loop) is model


@pytest.mark.parametrize(
    'cpu, in_flight, without, want',
    [
        # 2 workers in I/O-bound requests, 1 in a CPU-bound one, 1 idle: the CPU window sees 1, connections 3.
        (WorkerCounts(1, 3), 3, None, (3, 1)),
        (WorkerCounts(1, 3), 3, 0, (3, 1)),
        # A worker busy without a connection (booting) besides 2 requests waiting on I/O.
        (WorkerCounts(1, 3), 2, None, (2, 2)),  # the bound without fds
        (WorkerCounts(1, 3), 2, 1, (3, 1)),  # exact with them
        (WorkerCounts(0, 4), 0, None, (0, 4)),
        (WorkerCounts(4, 0), 0, None, (4, 0)),
        # Never more than the workers watched (a connection of a worker born during the window).
        (WorkerCounts(1, 1), 3, None, (2, 0)),
        (WorkerCounts(2, 0), 2, 2, (2, 0)),
        (WorkerCounts(0, 0), 1, None, (0, 0)),
    ],
)
def test_combine_working(cpu, in_flight, without, want):
    split = combine_working(cpu, in_flight, without)
    assert (split.working, split.idle) == want
    assert split.total == cpu.total
