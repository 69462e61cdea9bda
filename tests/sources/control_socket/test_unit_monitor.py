from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

from datadog_checks.gunicorn.sources.control_socket import client as ctl
from datadog_checks.gunicorn.sources.control_socket import locate, replies
from datadog_checks.gunicorn.sources.control_socket import monitor as monitor_module
from datadog_checks.gunicorn.sources.control_socket.monitor import ControlSocketMonitor, Health
from datadog_checks.gunicorn.sources.procfs import ProcessKey, ProcFS

from .fakes import FaultServer, ok, send_json


def stats(spawned, killed, reloads):
    return replies.parse_stats({'pid': 1, 'workers_spawned': spawned, 'workers_killed': killed, 'reloads': reloads})


def test_churn_is_a_delta_per_master_and_never_negative():
    monitor = ControlSocketMonitor(ProcFS('/proc'), logging.getLogger('test'))
    first, second = ProcessKey(1, 10), ProcessKey(2, 20)
    assert monitor.churn(first, stats(4, 0, 0)) is None  # no baseline yet
    assert monitor.churn(first, stats(6, 1, 1)) == (2, 1, 1)
    assert monitor.churn(second, stats(100, 50, 9)) is None  # another master starts from its own baseline
    assert monitor.churn(first, stats(5, 1, 1)) == (0, 0, 0)  # a counter going back is not a negative count
    assert monitor.churn(first, replies.parse_stats({'pid': 1})) is None  # missing fields: nothing to say
    monitor.forget_except({second})
    assert monitor.churn(first, stats(7, 1, 1)) is None


class BatchServer:
    """A control socket that records which requests came in one write, and answers like Gunicorn 27.0.1."""

    def __init__(self, path: str):
        self.reloads = 0
        self.dirty_arbiter_pid = None
        self.refuse = set()
        self.workers = None  # another reply to `show workers`
        self.batches: list[list[str]] = []
        self.server = FaultServer(path, self._serve)

    def runs(self, monitor: ControlSocketMonitor, master) -> tuple[Health, list[list[str]]]:
        self.batches.clear()
        health = monitor.read(master)
        return health, list(self.batches)

    def _serve(self, conn: socket.socket, srv: FaultServer) -> None:
        while (request := srv.read(conn)) is not None:
            batch = [request]
            # One send() of a few frames lands in the socket buffer at once: what is readable now came with it.
            while select.select([conn], [], [], 0)[0] and (more := srv.read(conn)) is not None:
                batch.append(more)
            self.batches.append([r['command'] for r in batch])
            for r in batch:
                if r['command'] in self.refuse:
                    send_json(conn, {'id': r['id'], 'status': 'error', 'error': 'no'})
                else:
                    send_json(conn, ok(r, self._data(r['command'])))

    def _data(self, command: str) -> dict:
        return {
            'show stats': {'pid': os.getpid(), 'reloads': self.reloads, 'dirty_arbiter_pid': self.dirty_arbiter_pid},
            'show workers': self.workers or {'workers': [{'pid': 7, 'age': 1, 'last_heartbeat': 0.5}]},
            'show config': {'timeout': 30 + self.reloads},
            'show listeners': {'listeners': [{'address': 'http://127.0.0.1:8000', 'fd': 5, 'type': 'tcp'}]},
            'show all': {'dirty_workers': [{'pid': 9, 'age': 1, 'last_heartbeat': 0.25}]},
        }[command]


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    directory = tempfile.mkdtemp(prefix='ctl-')
    server = BatchServer(os.path.join(directory, 'gunicorn.ctl'))
    yield server
    server.server.stop()
    shutil.rmtree(directory, ignore_errors=True)


STEADY = [['show stats', 'show workers']]


def test_one_round_trip_a_run_and_configuration_again_only_after_a_reload(batch_server):
    procfs = ProcFS('/proc')
    master = procfs.read_stat(os.getpid())
    monitor = ControlSocketMonitor(procfs, logging.getLogger('test'), configured_path=batch_server.server.path)
    listener = 'http://127.0.0.1:8000'

    health, batches = batch_server.runs(monitor, master)
    assert batches == [['show stats', 'show workers', 'show config', 'show listeners']]
    assert health.web_heartbeat_ages == [0.5] and health.config.timeout_seconds == 30
    assert health.listeners == (listener,) and health.dirty_heartbeat_ages is None

    for _ in range(2):
        health, batches = batch_server.runs(monitor, master)
        assert batches == STEADY
        assert health.config.timeout_seconds == 30 and health.listeners == (listener,)

    batch_server.reloads = 1  # a HUP may have changed the configuration and the binds
    health, batches = batch_server.runs(monitor, master)
    assert batches == [*STEADY, ['show config', 'show listeners']]
    assert health.config.timeout_seconds == 31

    batch_server.dirty_arbiter_pid = 8  # `show all` only while there is a dirty arbiter to wait on
    health, batches = batch_server.runs(monitor, master)
    assert batches == [*STEADY, ['show all']] and health.dirty_heartbeat_ages == [0.25]
    batch_server.dirty_arbiter_pid = None

    batch_server.reloads = 2
    batch_server.refuse = {'show listeners'}
    health, batches = batch_server.runs(monitor, master)
    assert batches == [*STEADY, ['show config', 'show listeners']] and health.listeners == ()
    assert health.config.timeout_seconds == 32
    batch_server.refuse = set()
    # A failed answer is not remembered: asked again, with the stats since nothing is known.
    health, batches = batch_server.runs(monitor, master)
    assert batches == [['show stats', 'show workers', 'show listeners']] and health.listeners == (listener,)

    batch_server.refuse = {'show workers'}  # an optional reply that fails costs its metrics, not the stats
    health, batches = batch_server.runs(monitor, master)
    assert batches == STEADY and health.web_heartbeat_ages == [] and health.stats.reloads == 2
    batch_server.refuse = set()

    monitor.forget_except(set())
    health, batches = batch_server.runs(monitor, master)
    assert batches == [['show stats', 'show workers', 'show config', 'show listeners']]


def test_a_wrong_master_gets_nothing_sent(batch_server):
    procfs = ProcFS('/proc')
    master = procfs.read_stat(os.getppid())  # the kernel names this process as the socket's listener, not its parent
    monitor = ControlSocketMonitor(procfs, logging.getLogger('test'), configured_path=batch_server.server.path)
    with pytest.raises(locate.Unverified) as info:
        monitor.read(master)
    assert isinstance(info.value.telling, locate.WrongMaster)
    assert batch_server.batches == [] and monitor._configs == {} and monitor._listeners == {}


def test_a_bad_reply_costs_the_run_its_figures(batch_server):
    procfs = ProcFS('/proc')
    master = procfs.read_stat(os.getpid())
    monitor = ControlSocketMonitor(procfs, logging.getLogger('test'), configured_path=batch_server.server.path)
    batch_server.workers = ['not', 'an', 'object']
    with pytest.raises(ctl.ProtocolError, match='show workers answered with a JSON list'):
        monitor.read(master)
    batch_server.workers = None
    assert monitor.read(master).web_heartbeat_ages == [0.5]


def test_a_master_whose_socket_fails_is_looked_for_again_at_doubling_intervals(monkeypatch):
    procfs = ProcFS('/proc')
    master = procfs.read_stat(os.getpid())
    now = [1000.0]
    monitor = ControlSocketMonitor(procfs, logging.getLogger('test'), clock=lambda: now[0])
    looked = []
    real = locate.candidates
    monkeypatch.setattr(monitor_module, 'candidates', lambda *a, **k: looked.append(now[0] - 1000) or real(*a, **k))
    # An Agent running the check every 15 s on a master with no control socket where Gunicorn would put one (this
    # process): at once again, since a starting master binds its socket only after its first workers, then less and
    # less often, and never less often than RELOCATE_SECONDS.
    for _ in range(100):
        assert monitor.read(master) is None  # this process holds no listening socket: nothing tied to it
        now[0] += 15
    assert looked[:7] == [0, 15, 30, 60, 120, 240, 480]
    waits = {later - earlier for earlier, later in zip(looked[6:-1], looked[7:], strict=True)}
    assert waits == {monitor_module.RELOCATE_SECONDS}
