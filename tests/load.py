"""Load for a test server: requests held open, idle clients left in an accept queue, and their release."""

from __future__ import annotations

import contextlib
import socket
import threading


def somaxconn() -> int:
    with open('/proc/sys/net/core/somaxconn') as f:
        return int(f.read())


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
