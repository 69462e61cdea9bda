"""Accept queue and requests in flight of a real Gunicorn, read from /proc/MASTER/net and sock_diag.

Sync workers serve one request at a time: with every worker held by `/sleep/S`, further clients wait in the kernel's
accept queue, which is what `queued` must show, while `in_flight` counts the held requests. Held requests are short
and always joined; further clients connect without sending a request and are closed before the holds end, so a
worker that accepts one later just reads EOF.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import threading

import pytest

from datadog_checks.gunicorn.collectors.discovery import Discovery
from datadog_checks.gunicorn.collectors.fds import FdReader
from datadog_checks.gunicorn.collectors.listeners import SOURCE_SOCKETS, ListenerFinder
from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources.procfs import ProcessGone, ProcFS, socket_inodes
from datadog_checks.gunicorn.sources.sockets import netlink
from datadog_checks.gunicorn.sources.sockets.listener_stats import listener_stats
from datadog_checks.gunicorn.sources.sockets.proc_net import read_net_tcp, read_net_unix
from datadog_checks.gunicorn.sources.sockets.rows import TCP_LISTEN
from datadog_checks.gunicorn.sources.sockets.tables import SocketTables

from ...common import wait_for
from ...gunicorn_env import running
from ...load import idle_clients, release, somaxconn, unix_hold, unix_request

pytestmark = pytest.mark.integration

HOLD_S = 4
GUNICORN_BACKLOG = 2048  # Gunicorn's `backlog` default
LOG = logging.getLogger(__name__)
PROCFS = ProcFS('/proc')


def held_inodes(pid: int) -> frozenset[int]:
    with contextlib.suppress(ProcessGone):
        return socket_inodes(PROCFS.read_fd_links(pid))
    return frozenset()


def listener(server, address: str | None = None):
    """The figures of the app's one listener, through the check's reader: at `address`, or (None) at the addresses
    the check finds from the sockets the master and its workers hold (needs ptrace access)."""
    tables = SocketTables(PROCFS, LOG)
    master = PROCFS.read_stat(server.master_pid)
    if address is None:
        (tree,) = Discovery(PROCFS, server.name, LOG).trees()
        found = ListenerFinder(tables, LOG, FdReader(PROCFS, LOG)).find(tree)
        assert found is not None and found.source == SOURCE_SOCKETS
        addresses = list(found.addresses)
    else:
        addresses = [parse_bind(address)]
    try:
        stats, _ = tables.queues(master, addresses)
    finally:
        tables.close()
    assert len(stats) <= 1, stats
    return stats[0] if stats else None


def from_every_row(server, address: str):
    """The same listener, matched on every row of the master's whole /proc tables (what the filtered inet_diag read
    must equal once settled); the capacity still comes from sock_diag, which /proc does not show."""
    pid = server.master_pid
    tcp, unix = read_net_tcp(PROCFS, pid), read_net_unix(PROCFS, pid)
    backlogs = netlink.unix_backlogs()
    if server.port is not None:
        for family in (socket.AF_INET, socket.AF_INET6):
            backlogs.update((r.inode, r.tx_queue) for r in netlink.tcp_sockets(family, [server.port], [TCP_LISTEN]))
    return listener_stats(tcp, unix, [parse_bind(address)], backlogs)


def ss_recv_q(port: int) -> int | None:
    """Recv-Q summed over the listening sockets on `port`, as `ss -lt` prints it; None without ss."""
    ss = shutil.which('ss')
    if ss is None:
        return None
    out = subprocess.run([ss, '-ltnH', f'sport = :{port}'], capture_output=True, text=True, timeout=10, check=True)
    return sum(int(line.split()[1]) for line in out.stdout.splitlines())


def test_tcp_bind_with_busy_sync_workers(tmp_path):
    with running(tmp_path, workers=4) as server:
        holds = [server.hold(f'/sleep/{HOLD_S}') for _ in range(4)]
        clients: list[socket.socket] = []
        try:
            wait_for(lambda: (s := listener(server, server.bind)) and s.in_flight == 4, 10, '4 in flight')
            clients = idle_clients(socket.AF_INET, ('127.0.0.1', server.port), 3)
            stats = wait_for(lambda: (s := listener(server, server.bind)) and s.queued == 3 and s, 5, '3 queued')
            assert (stats.address, stats.kind, stats.in_flight) == (server.bind, 'tcp', 4)
            assert stats.max_backlog == min(GUNICORN_BACKLOG, somaxconn())
            # The same listener when identified by the sockets the processes hold (needs ptrace access).
            assert listener(server) == stats
            assert from_every_row(server, server.bind) == [stats]
            assert ss_recv_q(server.port) in (None, 3)
        finally:
            release(clients, holds, HOLD_S + 10)


def test_unix_bind_with_busy_sync_workers(tmp_path):
    path = str(tmp_path / 'app.sock')
    with running(tmp_path, workers=4, bind=f'unix:{path}') as server:
        wait_for(lambda: b' 200 OK' in unix_request(path, '/'), 10, 'the unix socket to answer')
        holds = [unix_hold(path, f'/sleep/{HOLD_S}') for _ in range(4)]
        clients: list[socket.socket] = []
        address = f'unix:{path}'
        try:
            wait_for(lambda: (s := listener(server, address)) and s.in_flight == 4, 10, '4 in flight')
            clients = idle_clients(socket.AF_UNIX, path, 3)
            stats = wait_for(lambda: (s := listener(server, address)) and s.queued == 3 and s, 5, '3 queued')
            assert (stats.address, stats.kind, stats.in_flight) == (address, 'unix', 4)
            assert stats.max_backlog == min(GUNICORN_BACKLOG, somaxconn())
            assert listener(server) == stats
            assert from_every_row(server, address) == [stats]
        finally:
            release(clients, holds, HOLD_S + 10)


def _reuse_port_state(server) -> tuple[dict[int, int], dict[int, bool]]:
    """Per listening socket: its queue length, and whether the worker owning it is busy with a request."""
    rows = read_net_tcp(PROCFS, server.master_pid, local_ports={server.port})
    queues = {r.inode: r.rx_queue for r in rows if r.state == TCP_LISTEN}
    accepted = {r.inode for r in rows if r.inode and r.state != TCP_LISTEN}
    busy = {}
    for pid in server.worker_pids():
        inodes = held_inodes(pid)
        for inode in inodes & queues.keys():
            busy[inode] = bool(inodes & accepted)
    return queues, busy


def send_request(sock: socket.socket, target: str) -> threading.Thread:
    """Send a request on a connection a worker already accepted, and read the answer in the background."""

    def run():
        with contextlib.suppress(OSError):
            sock.settimeout(30)
            sock.sendall(f'GET {target} HTTP/1.0\r\nHost: test\r\n\r\n'.encode())
            while sock.recv(65536):
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_reuse_port_sums_the_listening_socket_of_every_worker(tmp_path):
    with running(tmp_path, workers=2, args=['--reuse-port']) as server:
        # Each worker opens its own socket after the fork; the master keeps none (`Listening at:` is empty).
        wait_for(lambda: len(_reuse_port_state(server)[1]) == 2, 10, 'a listening socket in each worker')
        queues, _ = _reuse_port_state(server)
        assert not queues.keys() & held_inodes(server.master_pid)

        connections: list[socket.socket] = []
        held: list[socket.socket] = []
        holds: list[threading.Thread] = []

        def settled():
            # The kernel picks a worker's socket by hashing the client's address and port, so a connection can wait
            # behind a busy worker while the other idles. Settled: every connection is accepted or waits on the
            # socket of a busy worker (an idle sync worker accepts at once).
            stats = listener(server, server.bind)
            queues, busy = _reuse_port_state(server)
            if stats is None or stats.queued + stats.in_flight != len(connections):
                return None
            return stats if all(busy.get(inode) for inode, queued in queues.items() if queued) else None

        try:
            # Connect first and send a request only on connections a worker accepted: one that lands behind the
            # busy worker stays queued (and is closed before that worker gets to it) instead of holding it longer.
            in_flight = 0
            for _ in range(20):
                connections += idle_clients(socket.AF_INET, ('127.0.0.1', server.port), 1)
                stats = wait_for(settled, 10, 'the new connection to settle')
                if stats.in_flight > in_flight:
                    in_flight = stats.in_flight
                    held.append(connections[-1])
                    holds.append(send_request(connections[-1], f'/sleep/{HOLD_S}'))
                if in_flight == 2:
                    break
            assert in_flight == 2
            waiting = len(connections) - 2
            if waiting < 2:
                connections += idle_clients(socket.AF_INET, ('127.0.0.1', server.port), 2 - waiting)
            stats = wait_for(settled, 5, 'the idle clients to settle')
            assert (stats.queued, stats.in_flight, len(stats.listen_inodes)) == (len(connections) - 2, 2, 2)
            listening = netlink.tcp_sockets(socket.AF_INET, [server.port], [TCP_LISTEN])
            per_socket = {r.inode: r.rx_queue for r in listening if r.inode in stats.listen_inodes}
            assert sum(per_socket.values()) == stats.queued
            assert stats.max_backlog == 2 * min(GUNICORN_BACKLOG, somaxconn())
            assert listener(server) == stats
            assert from_every_row(server, server.bind) == [stats]
            assert ss_recv_q(server.port) in (None, stats.queued)
        finally:
            release([c for c in connections if c not in held], holds, HOLD_S + 10)
            for sock in held:
                sock.close()


@pytest.mark.parametrize('bind', ['tcp', 'unix'])
def test_identification(tmp_path, bind):
    kwargs = {'bind': f'unix:{tmp_path}/app.sock'} if bind == 'unix' else {}
    with running(tmp_path, workers=1, **kwargs) as server:
        pid = server.master_pid
        tcp, unix = read_net_tcp(PROCFS, pid), read_net_unix(PROCFS, pid)
        assert listener_stats(tcp, unix, []) == []
        (by_address,) = listener_stats(tcp, unix, [parse_bind(server.bind)])
        # The master holds its control socket too: a unix listener (backlog 100) that starts listening a moment after
        # the workers boot, and that its workers do not hold. It must never be taken for one of the app's listeners.
        control = f'{server.tmp_path}/runtime/gunicorn.ctl'
        wait_for(
            lambda: any(row.listening and row.path == control for row in read_net_unix(PROCFS, pid)),
            10,
            'the control socket to listen',
        )
        # Identified from the sockets held, through sock_diag: the same listener, with its capacity.
        found = listener(server)
        assert (found.address, found.listen_inodes, found.queued) == (by_address.address, by_address.listen_inodes, 0)
