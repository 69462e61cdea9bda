"""Accept queue and requests in flight of a real Gunicorn, read from /proc/MASTER/net and sock_diag.

Sync workers serve one request at a time: with every worker held by `/sleep/S`, further clients wait in the kernel's
accept queue, which is what `queued` must show, while `in_flight` counts the held requests. Held requests are short
and always joined; further clients connect without sending a request and are closed before the holds end, so a
worker that accepts one later just reads EOF.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading

import pytest

from datadog_checks.gunicorn import netstat, sock_diag

from .gunicorn_env import running, wait_for

HOLD_S = 4
GUNICORN_BACKLOG = 2048  # Gunicorn's `backlog` default


def somaxconn() -> int:
    with open('/proc/sys/net/core/somaxconn') as f:
        return int(f.read())


def app_inodes(server) -> set[int]:
    """Every socket inode of the master and its workers (listeners and accepted connections alike)."""
    inodes: set[int] = set()
    for pid in (server.master_pid, *server.worker_pids()):
        with contextlib.suppress(netstat.NetProcessGone):
            inodes |= netstat.socket_inodes('/proc', pid)
    return inodes


def control_socket(server) -> str:
    # The harness points XDG_RUNTIME_DIR there; Gunicorn 25.1+ listens on its control socket by default.
    return f'unix:{server.tmp_path}/runtime/gunicorn.ctl'


def all_listeners(server, **ident) -> list:
    return netstat.read_listener_stats('/proc', server.master_pid, max_backlogs=sock_diag.max_backlogs(), **ident)


def from_every_row(server, **ident):
    """The same, by matching every row of every table (what read_listener_stats must equal once settled)."""
    pid = server.master_pid
    tcp, unix = netstat.read_net_tcp('/proc', pid), netstat.read_net_unix('/proc', pid)
    found = netstat.listener_stats(tcp, unix, max_backlogs=sock_diag.max_backlogs(), **ident)
    return [s for s in found if s.address != control_socket(server)]


def listener(server, **ident):
    """The application's one listener; the control socket, which the master's inodes include, is left out."""
    found = [s for s in all_listeners(server, **ident) if s.address != control_socket(server)]
    assert len(found) <= 1, found
    return found[0] if found else None


def ss_recv_q(port: int) -> int | None:
    """Recv-Q summed over the listening sockets on `port`, as `ss -lt` prints it; None without ss."""
    ss = shutil.which('ss')
    if ss is None:
        return None
    out = subprocess.run([ss, '-ltnH', f'sport = :{port}'], capture_output=True, text=True, timeout=10, check=True)
    return sum(int(line.split()[1]) for line in out.stdout.splitlines())


def unix_request(path: str, target: str, timeout: float = 30.0) -> bytes:
    """One HTTP/1.0 request over a unix socket; the answer up to the server's close."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f'GET {target} HTTP/1.0\r\nHost: test\r\n\r\n'.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b''.join(chunks)


def unix_hold(path: str, target: str) -> threading.Thread:
    def run():
        with contextlib.suppress(OSError):
            unix_request(path, target)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def idle_clients(family: int, address, count: int) -> list[socket.socket]:
    """Clients that connect and send nothing: they stay in the accept queue while every worker is busy."""
    clients = []
    for _ in range(count):
        client = socket.socket(family, socket.SOCK_STREAM)
        client.settimeout(5)
        client.connect(address)
        clients.append(client)
    return clients


def release(clients: list[socket.socket], holds: list[threading.Thread], timeout: float) -> None:
    for client in clients:
        client.close()
    for hold in holds:
        hold.join(timeout)
    assert not any(h.is_alive() for h in holds), 'held requests did not finish'


def test_tcp_bind_with_busy_sync_workers(tmp_path):
    with running(tmp_path, workers=4) as server:
        holds = [server.hold(f'/sleep/{HOLD_S}') for _ in range(4)]
        clients: list[socket.socket] = []
        try:
            wait_for(lambda: (s := listener(server, addresses=[server.bind])) and s.in_flight == 4, 10, '4 in flight')
            clients = idle_clients(socket.AF_INET, ('127.0.0.1', server.port), 3)
            stats = wait_for(
                lambda: (s := listener(server, addresses=[server.bind])) and s.queued == 3 and s, 5, '3 queued'
            )
            assert (stats.address, stats.kind, stats.in_flight) == (server.bind, 'tcp', 4)
            assert stats.max_backlog == min(GUNICORN_BACKLOG, somaxconn())
            # The same listener when identified by the sockets the processes hold (needs ptrace access).
            assert listener(server, inodes=app_inodes(server)) == stats
            assert from_every_row(server, inodes=app_inodes(server)) == [stats]
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
            wait_for(lambda: (s := listener(server, addresses=[address])) and s.in_flight == 4, 10, '4 in flight')
            clients = idle_clients(socket.AF_UNIX, path, 3)
            stats = wait_for(
                lambda: (s := listener(server, addresses=[address])) and s.queued == 3 and s, 5, '3 queued'
            )
            assert (stats.address, stats.kind, stats.in_flight) == (address, 'unix', 4)
            assert stats.max_backlog == min(GUNICORN_BACKLOG, somaxconn())
            assert listener(server, inodes=app_inodes(server)) == stats
            assert from_every_row(server, addresses=[address]) == [stats]
            # sock_diag counts the same queue on the listening socket itself.
            (diag,) = [u for u in sock_diag.unix_listeners() if u.inode in stats.listen_inodes]
            assert (diag.path, diag.queued, diag.max_backlog) == (path, 3, stats.max_backlog)
        finally:
            release(clients, holds, HOLD_S + 10)


def _reuse_port_state(server) -> tuple[dict[int, int], dict[int, bool]]:
    """Per listening socket: its queue length, and whether the worker owning it is busy with a request."""
    rows = netstat.read_net_tcp('/proc', server.master_pid, local_ports={server.port})
    queues = {r.inode: r.rx_queue for r in rows if r.state == netstat.TCP_LISTEN}
    accepted = {r.inode for r in rows if r.inode and r.state != netstat.TCP_LISTEN}
    busy = {}
    for pid in server.worker_pids():
        with contextlib.suppress(netstat.NetProcessGone):
            inodes = netstat.socket_inodes('/proc', pid)
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
        assert not queues.keys() & netstat.socket_inodes('/proc', server.master_pid)

        connections: list[socket.socket] = []
        held: list[socket.socket] = []
        holds: list[threading.Thread] = []

        def settled():
            # The kernel picks a worker's socket by hashing the client's address and port, so a connection can wait
            # behind a busy worker while the other idles. Settled: every connection is accepted or waits on the
            # socket of a busy worker (an idle sync worker accepts at once).
            stats = listener(server, addresses=[server.bind])
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
            per_socket = {s.inode: s.queued for s in sock_diag.tcp_listeners() if s.inode in stats.listen_inodes}
            assert sum(per_socket.values()) == stats.queued
            assert stats.max_backlog == 2 * min(GUNICORN_BACKLOG, somaxconn())
            assert listener(server, inodes=app_inodes(server)) == stats
            assert from_every_row(server, inodes=app_inodes(server)) == [stats]
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
        tcp, unix = netstat.read_net_tcp('/proc', pid), netstat.read_net_unix('/proc', pid)
        assert netstat.listener_stats(tcp, unix) == []
        (by_address,) = netstat.listener_stats(tcp, unix, addresses=[server.bind])
        # The master's sockets include its control socket: a unix listener (backlog 100) a caller must drop by
        # address, or it would be reported as one of the application's listeners.
        # It starts listening a moment after the workers boot.
        want = sorted([by_address.address, control_socket(server)])
        wait_for(
            lambda: sorted(s.address for s in all_listeners(server, inodes=netstat.socket_inodes('/proc', pid)))
            == want,
            10,
            'the listener and the control socket among the master sockets',
        )
