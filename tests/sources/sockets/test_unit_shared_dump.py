"""One inet_diag dump per family per run for the masters of several apps: the union of their ports, each master's
own rows, another namespace's master on /proc, failures met once and fallen back from by every master."""

from __future__ import annotations

import logging
import socket

from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources.sockets import netlink as sock_diag
from datadog_checks.gunicorn.sources.sockets.rows import TcpRow
from datadog_checks.gunicorn.sources.sockets.shared_dump import SharedTcpDump, dump_tcp
from datadog_checks.gunicorn.sources.sockets.tables import SocketTables

from ...fakeapp import APP, ESTABLISHED, LISTEN, app
from .test_unit_tables import FakeDiag, tcp_socket

OTHER = ['127.0.0.1:9000', '[::1]:9001']  # the second app's binds, one per family
V4, V6 = socket.AF_INET, socket.AF_INET6


class RecordingDiag(FakeDiag):
    """A FakeDiag that also keeps the family and ports of every dump."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked = []

    def tcp_sockets(self, family, ports, timeout_s, session):
        self.asked.append((family, sorted(ports)))
        return super().tcp_sockets(family, ports, timeout_s, session)


def host_sockets():
    """Both apps' sockets in the Agent's namespace, and another program's on 5432."""
    return [
        tcp_socket(8000, LISTEN, 10, rqueue=2, wqueue=2048),
        tcp_socket(8000, ESTABLISHED, 0),
        tcp_socket(8000, ESTABLISHED, 31),
        tcp_socket(9000, LISTEN, 40, rqueue=1, wqueue=128),
        tcp_socket(9000, ESTABLISHED, 41),
        TcpRow(V6, '::1', 9001, LISTEN, 64, 0, 0, 50),
        tcp_socket(5432, LISTEN, 99, wqueue=100),
    ]


def two_apps(fake, procfs):
    """Masters 100 (APP) and 200 (OTHER), with /proc tables of their own for the fallback."""
    app(fake)
    fake.add(200, 1, 'gunicorn: master [b]', children=(201,))
    fake.add(201, 200, 'gunicorn: worker [b]')
    fake.set_net(
        200,
        tcp=[
            ('127.0.0.1', 9000, '0.0.0.0', 0, LISTEN, 1, 40),
            ('127.0.0.1', 9000, '127.0.0.1', 40010, ESTABLISHED, 0, 41),
        ],
        tcp6=[('::1', 9001, '::', 0, LISTEN, 0, 50)],
    )
    return procfs.read_stat(100), procfs.read_stat(200)


def unexpected(*args, **kwargs):
    raise AssertionError('a master served by the shared dump dumped its own')


def shared_tables(procfs, shared, same=lambda pid: True):
    procfs.shares_network_namespace = same
    log = logging.getLogger('test')
    return [SocketTables(procfs, log, tcp_sockets=unexpected, shared=shared) for _ in range(2)]


def run(shared, tables, masters, binds):
    """One run as the check makes it: every master expected first, then each one's queues."""
    shared.start_run()
    addresses = [[parse_bind(b) for b in group] for group in binds]
    for table, master, wanted in zip(tables, masters, addresses, strict=True):
        table.expect(master, wanted)
    return [table.queues(master, wanted) for table, master, wanted in zip(tables, masters, addresses, strict=True)]


def alone(procfs, master, binds):
    """What a master's tables read with a dump of their own (single-app mode)."""
    diag = FakeDiag(tcp=host_sockets())
    tables = SocketTables(procfs, logging.getLogger('test'), tcp_sockets=diag.tcp_sockets)
    return tables.queues(master, [parse_bind(b) for b in binds])


def figures(found):
    stats, missing = found
    return [(s, s.accepted_inodes) for s in stats], missing


def test_two_apps_share_one_dump_per_family_and_each_gets_its_own_rows(fake, procfs):
    masters = two_apps(fake, procfs)
    diag = RecordingDiag(tcp=host_sockets())
    shared = SharedTcpDump(tcp_sockets=diag.tcp_sockets)
    tables = shared_tables(procfs, shared)
    first, second = run(shared, tables, masters, [[APP], OTHER])
    # Each master's ports in each of its families, as its own dump asked: the second app's in both.
    assert diag.asked == [(V4, [8000, 9000, 9001]), (V6, [9000, 9001])]
    assert figures(first) == figures(alone(procfs, masters[0], [APP]))
    assert figures(second) == figures(alone(procfs, masters[1], OTHER))
    assert [(s.address, s.max_backlog) for s in first[0] + second[0]] == [(APP, 2048), (OTHER[0], 128), (OTHER[1], 64)]
    assert shared.rows([V4], {8000}) == [r for r in host_sockets() if r.local_port == 8000]
    # One netlink session for every dump of both apps; each run dumps afresh.
    assert tables[0].session is tables[1].session is shared.session is not None
    assert set(diag.sessions) == {shared.session}
    run(shared, tables, masters, [[APP], OTHER])
    assert diag.asked[2:] == diag.asked[:2]


def test_a_master_in_another_namespace_reads_proc_and_stays_out_of_the_dump(fake, procfs):
    masters = two_apps(fake, procfs)
    diag = RecordingDiag(tcp=host_sockets())
    shared = SharedTcpDump(tcp_sockets=diag.tcp_sockets)
    tables = shared_tables(procfs, shared, same=lambda pid: pid == 100)
    first, second = run(shared, tables, masters, [[APP], OTHER])
    assert diag.asked == [(V4, [8000])]
    assert first[0][0].max_backlog == 2048
    # From /proc/200/net: the same queue and connections, no capacity.
    assert [(s.address, s.queued, s.in_flight, s.max_backlog) for s in second[0]] == [
        (OTHER[0], 1, 1, None),
        (OTHER[1], 0, 0, None),
    ]


def test_a_failed_shared_dump_falls_back_to_proc_for_every_master(fake, procfs):
    masters = two_apps(fake, procfs)
    # A timeout: met once, not once per master; both read /proc this run and the next run asks again.
    diag = RecordingDiag(error=sock_diag.SockDiagTimeout('slow'))
    shared = SharedTcpDump(tcp_sockets=diag.tcp_sockets)
    tables = shared_tables(procfs, shared)
    for calls in (1, 2):
        first, second = run(shared, tables, masters, [[APP], OTHER])
        assert diag.calls['tcp'] == calls
        assert [(s.queued, s.in_flight, s.max_backlog) for s in first[0]] == [(2, 1, None)]
        assert [(s.queued, s.in_flight, s.max_backlog) for s in second[0]] == [(1, 1, None), (0, 0, None)]
    # No inet_diag in the kernel: every master stops asking, and no run dumps again.
    diag = RecordingDiag(error=sock_diag.SockDiagUnsupported('ENOENT'))
    shared = SharedTcpDump(tcp_sockets=diag.tcp_sockets)
    tables = shared_tables(procfs, shared)
    for _ in range(2):
        first, second = run(shared, tables, masters, [[APP], OTHER])
        assert [s.max_backlog for s in first[0] + second[0]] == [None, None, None]
    assert diag.calls['tcp'] == 1


def test_a_master_the_run_did_not_expect_dumps_its_own(fake, procfs):
    (master, _) = two_apps(fake, procfs)
    diag = RecordingDiag(tcp=host_sockets())
    own = RecordingDiag(tcp=host_sockets())
    shared = SharedTcpDump(tcp_sockets=diag.tcp_sockets)
    procfs.shares_network_namespace = lambda pid: True
    tables = SocketTables(procfs, logging.getLogger('test'), tcp_sockets=own.tcp_sockets, shared=shared)
    shared.start_run()
    shared.want([V4], {9000})
    (stats,), _ = tables.queues(master, [parse_bind(APP)])
    assert stats.max_backlog == 2048 and own.asked == [(V4, [8000])]
    # Ports named after the run's dump was made are not in it: their master dumps its own too.
    shared.rows([V4], {9000})
    tables.expect(master, [parse_bind(APP)])
    tables.queues(master, [parse_bind(APP)])
    assert diag.asked == [(V4, [9000])] and own.asked == [(V4, [8000])] * 2


def test_more_ports_than_one_filter_holds_take_several_dumps():
    diag = RecordingDiag()
    ports = range(1, sock_diag.MAX_FILTER_PORTS + 3)
    dump_tcp(diag.tcp_sockets, None, {V4: set(ports)})
    assert [len(p) for _, p in diag.asked] == [sock_diag.MAX_FILTER_PORTS, 2]
    assert sorted(p for _, chunk in diag.asked for p in chunk) == list(ports)
