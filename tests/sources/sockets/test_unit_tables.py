"""The socket tables of a master: inet_diag or /proc by namespace, capacities, failures."""

from __future__ import annotations

import logging
import socket

import pytest

from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources.procfs import ProcessGone
from datadog_checks.gunicorn.sources.sockets import netlink as sock_diag
from datadog_checks.gunicorn.sources.sockets.rows import TcpRow
from datadog_checks.gunicorn.sources.sockets.tables import SocketTables

from ...fakeapp import APP, ESTABLISHED, LISTEN, SS_CONNECTED, SS_CONNECTING, SS_UNCONNECTED, app


class FakeDiag:
    """sock_diag answers for the tests: TCP sockets by port, unix listeners, and how often each was asked."""

    def __init__(self, tcp=(), unix=(), error=None):
        self.tcp = list(tcp)
        self.unix = list(unix)
        self.error = error
        self.calls = {'tcp': 0, 'unix': 0}
        self.sessions = []

    def tcp_sockets(self, family, ports, timeout_s, session):
        self.calls['tcp'] += 1
        self.sessions.append(session)
        if self.error:
            raise self.error
        return [s for s in self.tcp if s.family == family and s.local_port in ports]

    def unix_backlogs(self, timeout_s, session):
        self.calls['unix'] += 1
        if self.error:
            raise self.error
        return dict(self.unix)


def reader(procfs, diag, same=True):
    procfs.shares_network_namespace = lambda pid: same
    return SocketTables(
        procfs, logging.getLogger('test'), tcp_sockets=diag.tcp_sockets, unix_backlogs=diag.unix_backlogs
    )


def tcp_socket(port, state, inode, rqueue=0, wqueue=0):
    return TcpRow(socket.AF_INET, '127.0.0.1', port, state, wqueue, rqueue, 0, inode)


def test_another_namespace_reads_the_masters_table_without_capacity(fake, procfs):
    app(fake)
    diag = FakeDiag()
    (stats,), missing = reader(procfs, diag, same=False).queues(procfs.read_stat(100), [parse_bind(APP)])
    assert (stats.address, stats.queued, stats.in_flight, stats.max_backlog) == (APP, 2, 1, None)
    assert stats.accepted_inodes == {31} and missing == []
    assert diag.calls['tcp'] == 0


def test_the_same_namespace_reads_inet_diag_with_capacity(fake, procfs):
    app(fake)
    (fake.root / '100' / 'net' / 'tcp').unlink()  # never read
    diag = FakeDiag(
        tcp=[
            tcp_socket(8000, LISTEN, 10, rqueue=2, wqueue=2048),
            tcp_socket(8000, ESTABLISHED, 0),
            tcp_socket(8000, ESTABLISHED, 31),
            tcp_socket(8000, 0x08, 32),  # CLOSE_WAIT: the client left, the worker still holds it
        ]
    )
    queues = reader(procfs, diag)
    (stats,), _ = queues.queues(procfs.read_stat(100), [parse_bind(APP)])
    assert (stats.queued, stats.in_flight, stats.max_backlog, stats.accepted_inodes) == (2, 2, 2048, {31, 32})
    # Runs share one held netlink socket until the check is cancelled; then each dump has its own, and none is held.
    queues.queues(procfs.read_stat(100), [parse_bind(APP)])
    assert diag.sessions[0] is diag.sessions[1] is not None
    queues.close()
    (again,), _ = queues.queues(procfs.read_stat(100), [parse_bind(APP)])
    assert diag.sessions[2] is None and again == stats


def test_inet_diag_failures(fake, procfs):
    app(fake)
    master = procfs.read_stat(100)
    # A timeout costs that run the /proc read; the next run asks again.
    diag = FakeDiag(error=sock_diag.SockDiagTimeout('slow'))
    read = reader(procfs, diag)
    for _ in range(2):
        (stats,), _ = read.queues(master, [parse_bind(APP)])
        assert (stats.queued, stats.in_flight, stats.max_backlog) == (2, 1, None)
    assert diag.calls['tcp'] == 2
    # No inet_diag in the kernel: never asked again.
    diag = FakeDiag(error=sock_diag.SockDiagUnsupported('ENOENT'))
    read = reader(procfs, diag)
    for _ in range(2):
        read.queues(master, [parse_bind(APP)])
    assert diag.calls['tcp'] == 1


def test_an_unknown_namespace_reads_proc_and_asks_again(fake, procfs):
    app(fake)
    answers = [None, True]
    diag = FakeDiag(tcp=[tcp_socket(8000, LISTEN, 10, rqueue=0, wqueue=64)])
    read = reader(procfs, diag)
    procfs.shares_network_namespace = lambda pid: answers.pop(0)
    master = procfs.read_stat(100)
    assert read.queues(master, [parse_bind(APP)])[0][0].max_backlog is None
    assert read.queues(master, [parse_bind(APP)])[0][0].max_backlog == 64
    assert read.queues(master, [parse_bind(APP)])[0][0].max_backlog == 64  # remembered: no answer left to pop


def test_unix_capacity_is_asked_once_per_socket(fake, procfs):
    app(fake)
    fake.set_net(
        100,
        unix=[
            (True, SS_UNCONNECTED, 13, '/run/app.sock'),
            (False, SS_CONNECTING, 0, '/run/app.sock'),  # queued
            (False, SS_CONNECTED, 33, '/run/app.sock'),  # accepted
            (True, SS_UNCONNECTED, 14, '/run/other.sock'),  # another namespace's: unix_diag does not show it
        ],
    )
    diag = FakeDiag(unix=[(13, 100)])
    read = reader(procfs, diag)
    master = procfs.read_stat(100)
    wanted = [parse_bind('unix:/run/app.sock'), parse_bind('unix:/run/other.sock')]
    for _ in range(3):
        stats, missing = read.queues(master, wanted)
        read.prune([master.key])
        assert [(s.address, s.queued, s.in_flight, s.max_backlog) for s in stats] == [
            ('unix:/run/app.sock', 1, 1, 100),
            ('unix:/run/other.sock', 0, 0, None),
        ]
    assert diag.calls['unix'] == 1


def test_addresses_without_a_listener_are_returned(fake, procfs):
    app(fake)
    stats, missing = reader(procfs, FakeDiag(), same=False).queues(
        procfs.read_stat(100), [parse_bind(APP), parse_bind('127.0.0.1:9999'), parse_bind('unix:/nowhere')]
    )
    assert [s.address for s in stats] == [APP]
    assert [str(a) for a in missing] == ['127.0.0.1:9999', 'unix:/nowhere']


def test_a_master_gone_is_process_gone(fake, procfs):
    app(fake)
    master = procfs.read_stat(100)
    fake.remove(100)
    with pytest.raises(ProcessGone):
        reader(procfs, FakeDiag(), same=False).queues(master, [parse_bind(APP)])
