"""Saturation against real Gunicorn: accept queues, requests in flight, and the working/idle split they give.

Ground truth is made with the test app's routes: `/sleep/S` holds a sync worker in an I/O-bound request (no CPU),
`/burn/S` in a CPU-bound one; clients that connect and send nothing wait in the accept queue once every worker is
busy. Held requests are always joined, idle clients closed before the holds end.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest

from datadog_checks.dev.utils import get_metadata_metrics

from ..common import instance_for, run_as_nobody, run_once, wait_for
from ..gunicorn_env import GUNICORN_VERSIONS
from ..load import idle_clients, release, somaxconn, unix_hold, unix_request

pytestmark = pytest.mark.integration

HOLD_S = 8
GUNICORN_BACKLOG = 2048  # Gunicorn's `backlog` default
RUNS_DURING_HOLD = 4


def gauges(aggregator, name: str) -> dict[str, float]:
    """The last value of `name` per `listener:` tag (or '' without one)."""
    found = {}
    for metric in aggregator.metrics(name):
        listener = next((t.split(':', 1)[1] for t in metric.tags if t.startswith('listener:')), '')
        found[listener] = metric.value
    return found


def in_flight(dd_run_check, aggregator, check) -> float | None:
    run_once(dd_run_check, aggregator, check)
    return sum(gauges(aggregator, 'gunicorn.connections.in_flight').values())


@pytest.mark.parametrize('version', GUNICORN_VERSIONS)
def test_an_idle_app_reports_its_one_listener(version, gunicorn, make_check, aggregator, dd_run_check):
    # 27.0.1 also listens on its control socket (a unix listener of the master): never one of the app's.
    server = gunicorn(version=version, workers=2)
    run_once(dd_run_check, aggregator, make_check(instance_for(server)))
    assert gauges(aggregator, 'gunicorn.listen.queued') == {server.bind: 0}
    assert gauges(aggregator, 'gunicorn.connections.in_flight') == {server.bind: 0}
    assert gauges(aggregator, 'gunicorn.listen.backlog_max') == {server.bind: min(GUNICORN_BACKLOG, somaxconn())}
    for metric in aggregator.metrics('gunicorn.listen.queued'):
        assert set(metric.tags) == {'team:web', 'app:%s' % server.name, 'listener:%s' % server.bind}
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)


def _ground_truth(server, make_check, aggregator, dd_run_check, hold, address):
    """Two workers held in I/O, one burning CPU, one idle: every run says 3 working, 1 idle."""
    check = make_check(instance_for(server))
    holds = [hold(f'/sleep/{HOLD_S}'), hold(f'/sleep/{HOLD_S}'), hold(f'/burn/{HOLD_S}')]
    try:
        wait_for(lambda: in_flight(dd_run_check, aggregator, check) == 3, 10, '3 requests in flight')
        for _ in range(RUNS_DURING_HOLD):
            assert run_once(dd_run_check, aggregator, check) == {'working': 3, 'idle': 1}
            assert gauges(aggregator, 'gunicorn.connections.in_flight') == {address: 3}
    finally:
        release([], holds, HOLD_S + 10)


def _backlog(server, make_check, aggregator, dd_run_check, hold, connect, address):
    """All four workers held and three more clients connected: the queue reads 3."""
    check = make_check(instance_for(server))
    holds = [hold(f'/sleep/{HOLD_S}') for _ in range(4)]
    clients: list[socket.socket] = []
    try:
        wait_for(lambda: in_flight(dd_run_check, aggregator, check) == 4, 10, '4 requests in flight')
        clients = connect(3)

        def queued():
            run_once(dd_run_check, aggregator, check)
            return gauges(aggregator, 'gunicorn.listen.queued') == {address: 3}

        wait_for(queued, 5, '3 connections queued')
        assert run_once(dd_run_check, aggregator, check) == {'working': 4, 'idle': 0}
        assert gauges(aggregator, 'gunicorn.connections.in_flight') == {address: 4}
        assert gauges(aggregator, 'gunicorn.listen.backlog_max') == {address: min(GUNICORN_BACKLOG, somaxconn())}
    finally:
        release(clients, holds, HOLD_S + 10)


def test_sync_workers_in_io_and_cpu_bound_requests_are_working(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=4)
    _ground_truth(server, make_check, aggregator, dd_run_check, server.hold, server.bind)


def test_sync_workers_on_a_unix_socket(gunicorn, make_check, aggregator, dd_run_check, tmp_path):
    path = str(tmp_path / 'app.sock')
    server = gunicorn(workers=4, bind=f'unix:{path}')
    wait_for(lambda: b' 200 OK' in unix_request(path, '/'), 10, 'the unix socket to answer')
    _ground_truth(server, make_check, aggregator, dd_run_check, lambda target: unix_hold(path, target), server.bind)


def test_the_accept_queue_of_busy_sync_workers(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=4)
    connect = lambda n: idle_clients(socket.AF_INET, ('127.0.0.1', server.port), n)  # noqa: E731
    _backlog(server, make_check, aggregator, dd_run_check, server.hold, connect, server.bind)


def test_the_accept_queue_of_a_unix_socket(gunicorn, make_check, aggregator, dd_run_check, tmp_path):
    path = str(tmp_path / 'app.sock')
    server = gunicorn(workers=4, bind=f'unix:{path}')
    wait_for(lambda: b' 200 OK' in unix_request(path, '/'), 10, 'the unix socket to answer')
    connect = lambda n: idle_clients(socket.AF_UNIX, path, n)  # noqa: E731
    hold = lambda target: unix_hold(path, target)  # noqa: E731
    _backlog(server, make_check, aggregator, dd_run_check, hold, connect, server.bind)


def test_gthread_reports_requests_in_flight_and_keeps_the_cpu_split(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, args=['--threads', '4'])
    check = make_check(instance_for(server))
    holds = [server.hold(f'/sleep/{HOLD_S}') for _ in range(3)]
    try:
        wait_for(lambda: in_flight(dd_run_check, aggregator, check) == 3, 10, '3 requests in flight')
        for _ in range(RUNS_DURING_HOLD):
            # Threads sleeping in requests spend no CPU: a threaded worker is working only when it computes.
            assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
            assert gauges(aggregator, 'gunicorn.connections.in_flight') == {server.bind: 3}
    finally:
        release([], holds, HOLD_S + 10)
    # Once answered and closed by the client, they are no longer in flight.
    wait_for(lambda: in_flight(dd_run_check, aggregator, check) == 0, 10, 'no request in flight')


def test_gthread_workers_computing_in_pool_threads_are_working(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, args=['--threads', '4'])
    check = make_check(instance_for(server))
    hold = server.hold(f'/burn/{HOLD_S}')
    try:
        wait_for(lambda: in_flight(dd_run_check, aggregator, check) == 1, 10, 'the request in flight')
        wait_for(lambda: run_once(dd_run_check, aggregator, check) == {'working': 1, 'idle': 1}, 5, 'one working')
    finally:
        release([], [hold], HOLD_S + 10)


def test_reuse_port_sums_the_socket_of_every_worker(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, args=['--reuse-port'])
    check = make_check(instance_for(server))

    capacity = 2 * min(GUNICORN_BACKLOG, somaxconn())

    def both_sockets():
        run_once(dd_run_check, aggregator, check)
        return gauges(aggregator, 'gunicorn.listen.backlog_max') == {server.bind: capacity}

    wait_for(both_sockets, 10, 'a listening socket in each worker')
    assert gauges(aggregator, 'gunicorn.listen.queued') == {server.bind: 0}


def test_without_privileges_and_without_bind_listener_metrics_are_absent_said_once(gunicorn):
    server = gunicorn(workers=2)
    result = run_as_nobody({'proc_name': server.name, 'gunicorn': '/nonexistent'}, runs=3)
    assert result['errors'] == ['', '', '']
    metrics = result['metrics']
    assert sorted(v for v, _ in metrics['gunicorn.workers'])[-1] == 2
    for name in ('gunicorn.listen.queued', 'gunicorn.listen.backlog_max', 'gunicorn.connections.in_flight'):
        assert name not in metrics
    explained = [line for line in result['debug'] if '/fd' in line]
    assert len(explained) == 1, result['debug']
    assert 'CAP_SYS_PTRACE' in explained[0] and '`bind`' in explained[0]


def test_without_privileges_the_bind_option_gives_every_listener_metric(gunicorn):
    server = gunicorn(workers=2)
    result = run_as_nobody({'proc_name': server.name, 'gunicorn': '/nonexistent', 'bind': [server.bind]})
    assert result['errors'] == ['', '']
    metrics = result['metrics']
    tags = {'app:%s' % server.name, 'listener:%s' % server.bind}
    assert [(v, set(t)) for v, t in metrics['gunicorn.listen.queued']][-1] == (0, tags)
    assert [(v, set(t)) for v, t in metrics['gunicorn.connections.in_flight']][-1] == (0, tags)
    # inet_diag needs no privileges, and the namespace is told from /proc/PID/net/tcp: the capacity is there too.
    assert metrics['gunicorn.listen.backlog_max'][-1][0] == min(GUNICORN_BACKLOG, somaxconn())


def test_a_bind_address_nobody_listens_on_is_a_warning(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2)
    check = make_check(instance_for(server, bind=[server.bind, '127.0.0.1:1']))
    run_once(dd_run_check, aggregator, check)
    assert gauges(aggregator, 'gunicorn.listen.queued') == {server.bind: 0}
    assert len(check.warnings) == 1 and '127.0.0.1:1' in check.warnings[0]


@pytest.fixture
def shared_socket():
    """A control socket path an unprivileged Agent can reach: a traversable directory of its own under the temporary
    directory (pytest's are private to root), removed afterwards; the server makes the socket 0666."""
    directory = tempfile.mkdtemp(prefix='gunicorn-ctl-')
    os.chmod(directory, 0o755)
    yield os.path.join(directory, 'app.ctl')
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize('args', [[], ['--reuse-port']], ids=['shared', 'reuse-port'])
def test_the_control_socket_names_the_listeners_without_privileges(gunicorn, shared_socket, args):
    path = shared_socket
    server = gunicorn(workers=2, args=['--control-socket', path, '--control-socket-mode', '438', *args])
    wait_for(lambda: os.path.exists(path), 10, 'the control socket')
    # No bind option and no fd access: `show listeners` (or, with --reuse-port, show config's bind) names them.
    result = run_as_nobody({'proc_name': server.name, 'gunicorn': '/nonexistent', 'control_socket': path})
    assert result['errors'] == ['', '']
    metrics = result['metrics']
    assert {t for _, tags in metrics['gunicorn.listen.queued'] for t in tags if t.startswith('listener:')} == {
        'listener:%s' % server.bind
    }
    capacity = min(GUNICORN_BACKLOG, somaxconn()) * (2 if args else 1)
    assert metrics['gunicorn.listen.backlog_max'][-1][0] == capacity


def test_an_app_thread_in_sync_workers(gunicorn, make_check, aggregator, dd_run_check, tmp_path):
    # Seen from outside, a second thread is what gthread looks like: without a control socket the split falls back to
    # CPU alone. With one, show config says sync, and a worker sleeping in a request is working again: configured,
    # or found without configuration from the master's own fds whatever its name (the check runs as root here).
    path = str(tmp_path / 'app.ctl')
    server = gunicorn(workers=2, app='background:app', args=['--control-socket', path])
    wait_for(lambda: os.path.exists(path), 10, 'the control socket')
    without = gunicorn(workers=2, app='background:app', args=['--no-control-socket'])
    guessing = make_check(instance_for(without))
    found = make_check(instance_for(server))
    told = make_check(instance_for(server, control_socket=path))
    holds = [server.hold(f'/sleep/{HOLD_S}'), without.hold(f'/sleep/{HOLD_S}')]
    try:
        wait_for(lambda: in_flight(dd_run_check, aggregator, guessing) == 1, 10, 'the request in flight')
        assert run_once(dd_run_check, aggregator, guessing) == {'working': 0, 'idle': 2}
        wait_for(lambda: in_flight(dd_run_check, aggregator, told) == 1, 10, 'the request in flight')
        assert run_once(dd_run_check, aggregator, told) == {'working': 1, 'idle': 1}
        if os.geteuid() == 0:
            assert run_once(dd_run_check, aggregator, found) == {'working': 1, 'idle': 1}
    finally:
        release([], holds, HOLD_S + 10)
