"""The saturation report on fake proc trees: the worker split per model, problems told once, several masters."""

from __future__ import annotations

import logging
import socket

from datadog_checks.gunicorn.collectors.saturation import SaturationCollector, control_socket_hints
from datadog_checks.gunicorn.collectors.working import WorkerCounts, WorkerModel
from datadog_checks.gunicorn.sources.control_socket import replies
from datadog_checks.gunicorn.sources.control_socket.monitor import Health
from datadog_checks.gunicorn.sources.procfs import ProcessKey
from datadog_checks.gunicorn.sources.sockets.shared_dump import SharedTcpDump

from ..fakeapp import APP, LISTEN, app, tree
from ..sources.sockets.test_unit_shared_dump import RecordingDiag, host_sockets

OTHER = '127.0.0.1:9000'


def collector(procfs, bind=()):
    col = SaturationCollector(procfs, logging.getLogger('test'), bind)
    procfs.shares_network_namespace = lambda pid: False  # the fake tables are the truth
    return col


def test_sync_workers_holding_requests_are_working(fake, procfs):
    app(fake)
    report = collector(procfs).collect([tree(procfs)], WorkerCounts(0, 3))
    assert report.model is WorkerModel.SYNC and report.in_flight == 1
    assert (report.workers.working, report.workers.idle) == (1, 2)
    (listener,) = report.listeners
    assert (listener.address, listener.queued) == (APP, 2)


def test_a_cpu_working_worker_without_a_connection_is_added_when_fds_are_readable(fake, procfs):
    app(fake)
    fake.set_fds(101, 'socket:[10]', 'socket:[31]')  # 101 holds the accepted connection
    col = collector(procfs)
    # 102 computes without a connection (booting): 1 in flight + 1 = 2; the bound alone would say 1.
    report = col.collect([tree(procfs)], WorkerCounts(1, 2, frozenset({102})))
    assert (report.workers.working, report.workers.idle) == (2, 1)
    # 101 computing inside its request adds nothing.
    report = col.collect([tree(procfs)], WorkerCounts(1, 2, frozenset({101})))
    assert (report.workers.working, report.workers.idle) == (1, 2)
    # Without readable fds: the bound.
    col.fds.denied = True
    report = col.collect([tree(procfs)], WorkerCounts(1, 2, frozenset({102})))
    assert (report.workers.working, report.workers.idle) == (1, 2)


def test_threaded_workers_keep_the_cpu_split(fake, procfs):
    app(fake, threads=5)
    report = collector(procfs).collect([tree(procfs)], WorkerCounts(0, 3))
    assert report.model is WorkerModel.CONCURRENT and report.in_flight == 1
    assert (report.workers.working, report.workers.idle) == (0, 3)
    # Gunicorn's own config, when the caller has it, decides.
    report = collector(procfs).collect([tree(procfs)], WorkerCounts(0, 3), worker_class='sync', threads=1)
    assert report.model is WorkerModel.SYNC and report.workers.working == 1


def test_an_event_loop_seen_in_a_worker_makes_it_concurrent(fake, procfs):
    app(fake)
    for pid in (101, 102, 103):
        fake.set_fds(pid, 'socket:[10]', 'anon_inode:[eventpoll]')
    col = collector(procfs)
    assert col.collect([tree(procfs)], WorkerCounts(0, 3)).model is WorkerModel.CONCURRENT


def test_without_listeners_the_split_is_the_cpu_windows(fake, procfs):
    app(fake)
    (fake.root / '100' / 'fd').rename(fake.root / '100' / 'fd.away')
    report = collector(procfs).collect([tree(procfs)], WorkerCounts(1, 2))
    assert report.listeners == () and report.in_flight is None
    assert (report.workers.working, report.workers.idle) == (1, 2)


def test_a_configured_address_without_a_listener_is_a_problem_once(fake, procfs):
    app(fake)
    col = collector(procfs, bind=[APP, '127.0.0.1:9999'])
    first = col.collect([tree(procfs)], WorkerCounts(0, 3))
    assert [s.address for s in first.listeners] == [APP]
    assert len(first.problems) == 1 and '127.0.0.1:9999' in first.problems[0]
    assert first.in_flight is None  # not every listener was read: the split is the CPU window's
    assert col.collect([tree(procfs)], WorkerCounts(0, 3)).problems == ()
    # It comes back after the listener appeared and went again.
    tables = (fake.root / '100' / 'net' / 'tcp').read_text()
    fake.set_net(100, tcp=[('127.0.0.1', 9999, '0.0.0.0', 0, LISTEN, 0, 50)])
    assert col.collect([tree(procfs)], WorkerCounts(0, 3)).problems != ()  # now APP is missing
    (fake.root / '100' / 'net' / 'tcp').write_text(tables)
    assert len(col.collect([tree(procfs)], WorkerCounts(0, 3)).problems) == 1


def test_a_listener_gone_makes_the_finder_look_again(fake, procfs):
    app(fake)
    col = collector(procfs)
    col.collect([tree(procfs)], WorkerCounts(0, 3))
    fake.set_net(100, tcp=[('127.0.0.1', 8001, '0.0.0.0', 0, LISTEN, 0, 40)])  # rebound elsewhere (HUP)
    for pid in (100, 101, 102, 103):
        fake.set_fds(pid, 'socket:[40]')
    assert col.collect([tree(procfs)], WorkerCounts(0, 3)).listeners == ()
    (listener,) = col.collect([tree(procfs)], WorkerCounts(0, 3)).listeners
    assert listener.address == '127.0.0.1:8001'


def test_two_masters_sharing_a_configured_listener_count_it_once(fake, procfs):
    app(fake)
    fake.add(300, 1, 'gunicorn: master [a]', children=(301,))
    fake.add(301, 300, 'gunicorn: worker [a]')
    (fake.root / '300' / 'net').symlink_to(fake.root / '100' / 'net')  # the same namespace
    report = collector(procfs, bind=[APP]).collect(
        [tree(procfs), tree(procfs, master=300, workers=(301,))], WorkerCounts(0, 4)
    )
    assert len(report.listeners) == 1 and report.in_flight == 1


def test_a_master_gone_since_discovery_reports_no_listener(fake, procfs):
    app(fake)
    t = tree(procfs)
    fake.remove(100)
    report = collector(procfs, bind=[APP]).collect([t], WorkerCounts(0, 3))
    assert report.listeners == () and report.problems == ()


def test_collectors_sharing_a_dump_name_their_ports_first_and_dump_once(fake, procfs):
    app(fake)
    fake.add(200, 1, 'gunicorn: master [b]', children=(201,))
    fake.add(201, 200, 'gunicorn: worker [b]')
    diag = RecordingDiag(tcp=host_sockets())
    shared = SharedTcpDump(tcp_sockets=diag.tcp_sockets)
    log = logging.getLogger('test')
    # The first app's listeners come from its processes' sockets, the second's from its bind option.
    collectors = [SaturationCollector(procfs, log, shared=shared), SaturationCollector(procfs, log, [OTHER], shared)]
    procfs.shares_network_namespace = lambda pid: True
    groups = [[tree(procfs)], [tree(procfs, master=200, workers=(201,))]]
    shared.start_run()
    for col, trees in zip(collectors, groups, strict=True):
        col.prepare(trees)
    assert diag.asked == []  # nothing is dumped before every collector has named its ports
    reports = [col.collect(trees, WorkerCounts(0, 3)) for col, trees in zip(collectors, groups, strict=True)]
    assert diag.asked == [(socket.AF_INET, [8000, 9000])]
    assert [[(s.address, s.queued, s.in_flight, s.max_backlog) for s in r.listeners] for r in reports] == [
        [(APP, 2, 1, 2048)],
        [(OTHER, 1, 1, 128)],
    ]


def _health(listeners=(), bind=(), worker_class=None, threads=None):
    config = replies.parse_config({'bind': list(bind), 'worker_class': worker_class, 'threads': threads})
    return Health('/run/app.ctl', replies.parse_stats({'pid': 1}), config, [], None, tuple(listeners))


def test_control_socket_hints():
    one, two = ProcessKey(10, 1), ProcessKey(20, 2)
    found = [
        (one, _health(['http://127.0.0.1:8000'])),
        # --reuse-port: no listener in the master, the configured binds instead.
        (two, _health(bind=['0.0.0.0:9000'], worker_class="<class 'gunicorn.workers.sync.SyncWorker'>", threads=1)),
    ]
    assert control_socket_hints(found) == ({10: ['http://127.0.0.1:8000'], 20: ['0.0.0.0:9000']}, 'sync', 1)
    assert control_socket_hints([]) == ({}, None, None)
    assert control_socket_hints([(one, _health())]) == ({}, None, None)
