"""Control-socket metrics against real Gunicorn 27.0.1, their absence on 23.0, and misbehaving sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.dev.utils import get_metadata_metrics
from datadog_checks.gunicorn.sources.control_socket import client as ctl
from datadog_checks.gunicorn.sources.control_socket import locate
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ...common import instance_for, run_once, wait_for
from ...gunicorn_env import NEWEST

pytestmark = pytest.mark.integration

HEALTH_METRICS = [
    'gunicorn.workers.target',
    'gunicorn.worker.timeout',
    'gunicorn.worker.threads',
    'gunicorn.worker.max_requests',
    'gunicorn.worker.heartbeat_age.max',
    'gunicorn.worker.heartbeat_age.avg',
    'gunicorn.workers.near_timeout',
]
CHURN_METRICS = ['gunicorn.workers.spawned', 'gunicorn.workers.killed', 'gunicorn.reloads']


def with_socket(gunicorn, tmp_path, workers=2, args=()):
    path = str(tmp_path / 'app.ctl')
    server = gunicorn(version=NEWEST, workers=workers, args=['--control-socket', path, *args])
    wait_for(lambda: os.path.exists(path), 10, 'the control socket')
    return server, path


def value(aggregator, name):
    (metric,) = aggregator.metrics(name)
    return metric.value


def test_target_config_and_heartbeats(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    server, path = with_socket(gunicorn, tmp_path, workers=3, args=['--threads', '2', '--max-requests', '500'])
    check = make_check(instance_for(server, control_socket=path))
    run_once(dd_run_check, aggregator, check)
    for name in HEALTH_METRICS:
        aggregator.assert_metric_has_tag(name, 'worker_class:gthread')
    assert value(aggregator, 'gunicorn.workers.target') == 3
    assert value(aggregator, 'gunicorn.worker.timeout') == 30
    assert value(aggregator, 'gunicorn.worker.threads') == 2
    assert value(aggregator, 'gunicorn.worker.max_requests') == 500
    assert (
        0
        <= value(aggregator, 'gunicorn.worker.heartbeat_age.avg')
        <= value(aggregator, 'gunicorn.worker.heartbeat_age.max')
        < 30
    )
    assert value(aggregator, 'gunicorn.workers.near_timeout') == 0
    for name in CHURN_METRICS:
        assert not aggregator.metrics(name)  # counters need a previous run
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)


def test_churn_after_ttin_ttou_kill_and_hup(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    server, path = with_socket(gunicorn, tmp_path, workers=2)
    check = make_check(instance_for(server, control_socket=path))
    # The counters' baseline: a run that read them.
    wait_for(lambda: value_after_run(dd_run_check, aggregator, check, 'gunicorn.workers.target') == 2, 10, 'a reading')

    server.signal(signal.SIGTTIN)
    server.wait_ready(workers=3)
    run_once(dd_run_check, aggregator, check)
    assert value(aggregator, 'gunicorn.workers.target') == 3
    assert value(aggregator, 'gunicorn.workers.spawned') == 1

    os.kill(server.worker_pids()[0], signal.SIGKILL)
    wait_for(lambda: value_after_run(dd_run_check, aggregator, check, 'gunicorn.workers.spawned') == 1, 10, 'respawn')

    server.signal(signal.SIGTTOU)
    server.wait_ready(workers=2)
    run_once(dd_run_check, aggregator, check)
    assert value(aggregator, 'gunicorn.workers.target') == 2
    assert value(aggregator, 'gunicorn.workers.killed') >= 1  # Gunicorn's own count of the kills it sent

    old = set(server.worker_pids())
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.worker_pids()) == 2 and not old & set(server.worker_pids()), 20, 'the HUP')
    server.wait_quiet()
    wait_for(lambda: value_after_run(dd_run_check, aggregator, check, 'gunicorn.reloads') == 1, 10, 'the reload')


def value_after_run(dd_run_check, aggregator, check, name):
    run_once(dd_run_check, aggregator, check)
    metrics = aggregator.metrics(name)
    return metrics[-1].value if metrics else None


def test_a_stuck_sync_worker_is_near_timeout_before_gunicorn_kills_it(
    gunicorn, tmp_path, make_check, aggregator, dd_run_check
):
    server, path = with_socket(gunicorn, tmp_path, workers=1, args=['--timeout', '4'])
    check = make_check(instance_for(server, control_socket=path, heartbeat_timeout_share=0.5))
    (worker,) = server.worker_pids()
    request = server.hold('/sleep/30')
    # 0.5 x 4 s: the heartbeat passes 2 s, then Gunicorn kills the worker at 4 s.
    ages = []

    def near():
        run_once(dd_run_check, aggregator, check)
        ages.append(value(aggregator, 'gunicorn.worker.heartbeat_age.max'))
        return value(aggregator, 'gunicorn.workers.near_timeout') == 1

    wait_for(near, 10, 'the worker to be reported near its timeout')
    # At most the 4 s timeout plus Gunicorn's one-second arbiter loop; 10 s leaves room for a loaded machine.
    assert 2 <= ages[-1] < 10, ages
    assert worker in server.worker_pids() or ages[-1] >= 2  # reported while it was still there to be killed
    wait_for(lambda: worker not in server.worker_pids(), 15, 'Gunicorn to kill the stuck worker')
    request.join(10)


def test_dirty_workers_and_their_arbiter(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    server, path = with_socket(gunicorn, tmp_path, args=['--dirty-app', 'dirty:Tasks', '--dirty-workers', '2'])
    wait_for(lambda: len(server.titled('gunicorn: dirty-worker [')) == 2, 20, 'two dirty workers')
    check = make_check(instance_for(server, control_socket=path, control_socket_timeout=3))
    run_once(dd_run_check, aggregator, check)
    assert value(aggregator, 'gunicorn.dirty_arbiter.up') == 1
    assert value(aggregator, 'gunicorn.dirty_workers') == 2  # from the process table
    assert 0 <= value(aggregator, 'gunicorn.dirty_worker.heartbeat_age.max') < 30
    assert value(aggregator, 'gunicorn.workers.target') == 2  # dirty workers are not HTTP workers


def test_the_default_path_is_found_without_configuration(gunicorn, make_check, aggregator, dd_run_check):
    # Without XDG_RUNTIME_DIR Gunicorn uses ~/.gunicorn/gunicorn.ctl of the user running the master: the check's
    # home-directory candidate. Other servers on this host may take that path over: wait for ours to hold it.
    server = gunicorn(version=NEWEST, workers=2, env={'XDG_RUNTIME_DIR': ''})
    check = make_check(instance_for(server))

    def found():
        run_once(dd_run_check, aggregator, check)
        return aggregator.metrics('gunicorn.workers.target')

    wait_for(found, 20, 'the check to find the control socket at its default path')
    located = check._control._located[check._discovery.trees()[0].master.key]
    assert located.candidates[0].path.endswith('/.gunicorn/gunicorn.ctl')


def test_a_master_seen_before_it_binds_its_socket_is_read_once_it_does(
    gunicorn, tmp_path, make_check, aggregator, dd_run_check
):
    # Gunicorn titles its master, spawns the first workers, and only then binds the control socket, from a thread: an
    # Agent that sees a master start must not wait RELOCATE_SECONDS for its figures. A slow first fork holds the
    # master in that window long enough for the check to run in it.
    hooks = tmp_path / 'slow_fork.py'
    hooks.write_text('import time\n\ndef pre_fork(server, worker):\n    time.sleep(3)\n')
    server = gunicorn(wait=False, version=NEWEST, workers=1, args=['-c', str(hooks)])
    wait_for(server.master_title_set, 20, 'the master title')
    check = make_check(instance_for(server))
    run_once(dd_run_check, aggregator, check)
    socket_path = server.default_control_socket
    assert not socket_path.exists() and not aggregator.metrics('gunicorn.workers.target')
    server.wait_ready()

    def figures():
        run_once(dd_run_check, aggregator, check)
        return aggregator.metrics('gunicorn.workers.target')

    (target,) = wait_for(figures, 5, 'the control-socket figures')
    assert target.value == 1
    assert check.warnings == []
    # Found as the listener the master holds: its title overwrote what /proc/MASTER/environ shows.
    (located,) = check._control._located.values()
    assert located.candidates[0].source == "the master's own listening socket"
    assert ProcFS('/proc').read_environ(server.master_pid, frozenset({'XDG_RUNTIME_DIR', 'HOME'})) == {}


def test_gunicorn_23_has_no_control_socket_and_no_warning(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(version='23.0.0', workers=2)
    check = make_check(instance_for(server))
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    for name in HEALTH_METRICS + CHURN_METRICS:
        assert not aggregator.metrics(name)
    assert check.warnings == []


class FaultServer:
    """A unix socket server that misbehaves one way, for the check's configured control_socket."""

    def __init__(self, path, behaviour):
        self.path = str(path)
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.1)
        held = []
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            held.append(conn)
            with contextlib.suppress(OSError):
                self.behaviour(conn)
        for conn in held:
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def _read_request(conn):
    conn.settimeout(2)
    (length,) = struct.unpack('>I', conn.recv(4))
    return json.loads(conn.recv(length))


def _reply(conn, payload):
    data = json.dumps(payload).encode()
    conn.sendall(struct.pack('>I', len(data)) + data)


BEHAVIOURS = {
    'hangs': lambda conn: None,
    'closes at once': lambda conn: conn.close(),
    'garbage json': lambda conn: (_read_request(conn), conn.sendall(struct.pack('>I', 5) + b'{oops')),
    'error reply': lambda conn: _reply(conn, {'id': _read_request(conn)['id'], 'status': 'error', 'error': 'no'}),
    'huge length': lambda conn: (_read_request(conn), conn.sendall(struct.pack('>I', 2**31))),
    'another master': lambda conn: _reply(
        conn, {'id': _read_request(conn)['id'], 'status': 'ok', 'data': {'pid': 1, 'workers_target': 99}}
    ),
    # The check pipelines `show workers` behind `show stats`: a peer answering only the first, or closing after it.
    'another master, second reply garbage': lambda conn: (
        _reply(conn, {'id': _read_request(conn)['id'], 'status': 'ok', 'data': {'pid': 1}}),
        conn.sendall(struct.pack('>I', 5) + b'{oops'),
    ),
    'error reply to both': lambda conn: [
        _reply(conn, {'id': _read_request(conn)['id'], 'status': 'error', 'error': 'no'}) for _ in range(2)
    ],
}


@pytest.fixture
def trust_the_fault_server(monkeypatch):
    """The fault servers run in this test process, which the kernel names as the socket's listener: here only what
    the socket says is under test; the check's refusal of a listener that is not the master has tests of its own."""
    monkeypatch.setattr(locate._Verifier, 'check_peer', lambda self, sock: None)


def test_a_configured_socket_the_master_does_not_listen_on_gets_nothing(
    gunicorn, tmp_path, make_check, aggregator, dd_run_check
):
    server = gunicorn(workers=2)
    requests = []
    fault = FaultServer(tmp_path / 'fault.ctl', lambda conn: requests.append(conn.recv(4096)))
    try:
        check = make_check(instance_for(server, control_socket=fault.path, control_socket_timeout=0.5))
        assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    finally:
        fault.close()
    assert not aggregator.metrics('gunicorn.workers.target') and requests in ([], [b''])
    (warning,) = check.warnings
    assert fault.path in warning and 'answered by pid %d' % os.getpid() in warning


@pytest.mark.parametrize('behaviour', sorted(BEHAVIOURS))
def test_a_misbehaving_socket_costs_one_timeout_and_a_warning(
    behaviour, gunicorn, tmp_path, make_check, aggregator, dd_run_check, trust_the_fault_server
):
    server = gunicorn(workers=2)
    fault = FaultServer(tmp_path / 'fault.ctl', BEHAVIOURS[behaviour])
    try:
        check = make_check(instance_for(server, control_socket=fault.path, control_socket_timeout=0.5))
        started = time.monotonic()
        gauges = run_once(dd_run_check, aggregator, check)
        elapsed = time.monotonic() - started
    finally:
        fault.close()
    assert gauges == {'working': 0, 'idle': 2}  # the process table still speaks
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    assert not aggregator.metrics('gunicorn.workers.target')
    (warning,) = check.warnings
    assert fault.path in warning and 'no control-socket metrics for master %d' % server.master_pid in warning
    # 0.5 s for the socket, 0.1 s of CPU sampling, and the version command: far below this bound.
    assert elapsed < 15, elapsed  # the deadline is 0.5 s: only no deadline at all could take this long


def test_a_missing_configured_socket_says_what_to_check(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=1)
    check = make_check(instance_for(server, control_socket=str(tmp_path / 'nowhere.ctl')))
    run_once(dd_run_check, aggregator, check)
    (warning,) = check.warnings
    assert 'nowhere.ctl' in warning


def test_show_config_is_asked_once_per_reload(gunicorn, tmp_path, make_check, aggregator, dd_run_check, monkeypatch):
    conf = tmp_path / 'gunicorn.conf.py'
    conf.write_text('timeout = 30\n')
    server, path = with_socket(gunicorn, tmp_path, workers=2, args=['-c', str(conf)])
    asked = []
    real = ctl.ControlSocketClient.query_many

    def counting(self, commands):
        asked.extend(c for c in commands if c == 'show config')
        return real(self, commands)

    monkeypatch.setattr(ctl.ControlSocketClient, 'query_many', counting)
    check = make_check(instance_for(server, control_socket=path))
    for _ in range(3):
        run_once(dd_run_check, aggregator, check)
        assert value(aggregator, 'gunicorn.worker.timeout') == 30
    assert len(asked) == 1

    # A different size: Gunicorn imports the file, and Python's bytecode cache checks only its size and its mtime
    # in whole seconds, so the same size within the same second would run the old configuration again.
    conf.write_text('timeout = 20  # after the reload\n')
    old = set(server.worker_pids())
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.worker_pids()) == 2 and not old & set(server.worker_pids()), 20, 'the HUP')
    wait_for(lambda: value_after_run(dd_run_check, aggregator, check, 'gunicorn.worker.timeout') == 20, 10, 'reload')
    assert len(asked) == 2


@pytest.mark.parametrize('after_stats', ['hangs', 'closes'])
def test_a_socket_answering_only_the_stats_still_reports_them(
    after_stats, gunicorn, tmp_path, make_check, aggregator, dd_run_check, trust_the_fault_server
):
    # The check pipelines `show workers` (and on a first run `show config` and `show listeners`) behind `show stats`.
    # A peer that answers the stats of the right master and then goes silent, or closes with the rest unread, costs
    # the heartbeat metrics and at most the timeout, never the stats.
    server = gunicorn(workers=2)

    def stats_only(conn):
        request = _read_request(conn)
        if request['command'] == 'show stats':
            stats = {'pid': server.master_pid, 'workers_target': 2, 'workers_spawned': 2, 'workers_killed': 0}
            _reply(conn, {'id': request['id'], 'status': 'ok', 'data': dict(stats, reloads=0)})
        if after_stats == 'closes':
            conn.close()

    fault = FaultServer(tmp_path / 'fault.ctl', stats_only)
    try:
        check = make_check(instance_for(server, control_socket=fault.path, control_socket_timeout=0.5))
        started = time.monotonic()
        run_once(dd_run_check, aggregator, check)
        elapsed = time.monotonic() - started
    finally:
        fault.close()
    assert value(aggregator, 'gunicorn.workers.target') == 2
    assert not aggregator.metrics('gunicorn.worker.heartbeat_age.max')
    assert check.warnings == []
    assert elapsed < 15, elapsed  # the deadline is 0.5 s: only no deadline at all could take this long
