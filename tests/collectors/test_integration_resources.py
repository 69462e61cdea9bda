"""Memory, CPU, threads, ages and restarts per role, against real Gunicorn processes."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from datadog_checks.dev.utils import get_metadata_metrics

from ..common import CONTROL_SOCKET_METRICS as ALL_CONTROL_SOCKET_METRICS
from ..common import cpu_ns, instance_for, run_as_nobody, run_once, wait_for

pytestmark = pytest.mark.integration


# What a run sends for an app with a master and sync workers, as root (listeners found from the processes' sockets),
# once a previous run gave a baseline.
# The control socket's figures but the dirty workers': these apps run none.
CONTROL_SOCKET_METRICS = [name for name in ALL_CONTROL_SOCKET_METRICS if '.dirty_' not in name]
EVERY_RUN_METRICS = [
    'gunicorn.workers',
    'gunicorn.masters',
    'gunicorn.master.uptime',
    'gunicorn.worker.age.min',
    'gunicorn.worker.age.max',
    'gunicorn.workers.restarts',
    'gunicorn.threads',
    'gunicorn.memory.rss',
    'gunicorn.memory.rss.max',
    'gunicorn.memory.pss',
    'gunicorn.memory.pss.max',
    'gunicorn.cpu.utilization',
    'gunicorn.cpu.run_queue_wait',
    'gunicorn.listen.queued',
    'gunicorn.listen.backlog_max',
    'gunicorn.connections.in_flight',
]


def last(aggregator, name, *tags):
    values = [m.value for m in aggregator.metrics(name) if all(t in m.tags for t in tags)]
    assert values, 'no %s %s in %s' % (name, tags, sorted(aggregator._metrics))
    return values[-1]


def test_a_second_run_reports_every_resource_metric(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=3)
    check = make_check(instance_for(server))
    dd_run_check(check)
    run_once(dd_run_check, aggregator, check)
    app = 'app:%s' % server.name
    aggregator.assert_metric('gunicorn.masters', 1, tags=['team:web', app])
    aggregator.assert_metric('gunicorn.workers.restarts', 0)
    assert last(aggregator, 'gunicorn.master.uptime') > 0
    assert 0 < last(aggregator, 'gunicorn.worker.age.min') <= last(aggregator, 'gunicorn.worker.age.max')
    for role in ('master', 'worker'):
        assert last(aggregator, 'gunicorn.threads', 'role:%s' % role) >= (1 if role == 'master' else 3)
        assert last(aggregator, 'gunicorn.cpu.utilization', 'role:%s' % role) >= 0
        assert last(aggregator, 'gunicorn.cpu.run_queue_wait', 'role:%s' % role) >= 0
        assert last(aggregator, 'gunicorn.memory.pss', 'role:%s' % role) > 0  # the tests run as root
    # RSS as ps reports it (the sum over workers; pages may move by a few between the two reads).
    truth = sum(psutil.Process(p).memory_info().rss for p in server.worker_pids())
    assert last(aggregator, 'gunicorn.memory.rss', 'role:worker') == pytest.approx(truth, rel=0.05)
    for name in EVERY_RUN_METRICS:
        aggregator.assert_metric(name)
    # Gunicorn 27.0.1's control socket, which the check finds where this master listens on it.
    for name in CONTROL_SOCKET_METRICS:
        aggregator.assert_metric(name)
    aggregator.assert_all_metrics_covered()  # and nothing else
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)


def test_a_worker_burning_cpu_shows_in_worker_utilization(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2)
    check = make_check(instance_for(server))
    before = {pid: cpu_ns(pid) for pid in server.worker_pids()}
    request = server.hold('/burn/3')
    wait_for(lambda: any(cpu_ns(p) - before[p] > 20_000_000 for p in before), 10, 'a worker to burn CPU')
    dd_run_check(check)
    run_once(dd_run_check, aggregator, check)
    # One worker spinning for the whole interval is up to 100% of a CPU; on a loaded 2-core host it may get half of
    # one, while idle workers stay near 0.
    assert last(aggregator, 'gunicorn.cpu.utilization', 'role:worker') > 25
    request.join(10)


def test_sigkill_and_max_requests_recycling_are_each_one_restart(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=1, args=['--max-requests', '3'])
    check = make_check(instance_for(server))
    dd_run_check(check)

    (victim,) = server.worker_pids()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: server.worker_pids() not in ([], [victim]), 10, 'a replacement worker')
    run_once(dd_run_check, aggregator, check)
    aggregator.assert_metric('gunicorn.workers.restarts', 1, count=1)

    (recycled,) = server.worker_pids()
    for _ in range(3):
        assert server.get('/')[0] == 200
    wait_for(lambda: server.worker_pids() not in ([], [recycled]), 10, 'max_requests to recycle the worker')
    run_once(dd_run_check, aggregator, check)
    aggregator.assert_metric('gunicorn.workers.restarts', 1, count=1)
    run_once(dd_run_check, aggregator, check)
    aggregator.assert_metric('gunicorn.workers.restarts', 0, count=1)


def test_pss_shows_what_preloaded_workers_really_cost(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=4, app='big:app', args=['--preload'], env={'BIG_APP_MB': '64'})
    run_once(dd_run_check, aggregator, make_check(instance_for(server)))
    rss = last(aggregator, 'gunicorn.memory.rss', 'role:worker')
    pss = last(aggregator, 'gunicorn.memory.pss', 'role:worker')
    assert rss > 4 * 64 * 1024 * 1024  # each worker maps the whole ballast
    assert pss < rss / 2, (pss, rss)  # but shares it with the master and the others


def test_two_masters_during_a_usr2_upgrade(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=1)
    check = make_check(instance_for(server))
    server.signal(signal.SIGUSR2)
    new = wait_for(lambda: server.titled('gunicorn: master [%s.2]' % server.name), 20, 'the new master')[0]
    wait_for(lambda: server.worker_pids(new), 20, 'the new worker')
    run_once(dd_run_check, aggregator, check)
    aggregator.assert_metric('gunicorn.masters', 2)


def test_without_privileges_what_needs_none_still_works(gunicorn):
    server = gunicorn(workers=2)
    result = run_as_nobody({'proc_name': server.name, 'gunicorn': '/nonexistent'})
    assert result['errors'] == ['', '']
    metrics = result['metrics']
    assert sorted(v for v, _ in metrics['gunicorn.workers'])[-1] == 2
    for name in ('gunicorn.masters', 'gunicorn.threads', 'gunicorn.memory.rss', 'gunicorn.cpu.utilization'):
        assert name in metrics
    assert 'gunicorn.memory.pss' not in metrics  # smaps_rollup of root's processes is not for nobody
