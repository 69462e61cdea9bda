"""Which workers were working: the CPU window's split, the worker model, and in-flight requests."""

from __future__ import annotations

import pytest

from datadog_checks.gunicorn.collectors.working import (
    WorkerCounts,
    WorkerModel,
    combine_working,
    count_working,
    worker_model,
)


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
