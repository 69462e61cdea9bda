"""Fault servers for the control-socket tests: real Unix sockets served by a thread the test controls."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from datadog_checks.gunicorn.sources.control_socket.client import (
    ControlSocketClient,
    ControlSocketError,
)
from datadog_checks.gunicorn.sources.control_socket.replies import (
    parse_config,
    parse_listeners,
    parse_stats,
)

E = TypeVar('E', bound=ControlSocketError)

# Long enough that a loaded machine never runs out of it where a test expects an answer or a close.
TIMEOUT = 1.0
# Far above TIMEOUT so a loaded CI machine never fails these, and below the 10 s the fake servers hold a connection
# at most: only a client without a deadline could take that long.
MARGIN = 5.0

# A `show stats` reply as Gunicorn 27.0.1 sends it (captured from a real master, pids changed).
STATS = {
    'uptime': 2.07,
    'pid': 1000,
    'workers_current': 2,
    'workers_target': 2,
    'workers_spawned': 2,
    'workers_killed': 0,
    'reloads': 0,
    'dirty_arbiter_pid': 1002,
}


# The fault server


def read_request(conn: socket.socket) -> dict | None:
    """One request frame from the client, or None when it went away."""
    header = conn.recv(4, socket.MSG_WAITALL)
    if len(header) < 4:
        return None
    (length,) = struct.unpack('>I', header)
    return json.loads(conn.recv(length, socket.MSG_WAITALL))


def send_json(conn: socket.socket, message: object) -> None:
    send_raw(conn, json.dumps(message).encode())


def send_raw(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack('>I', len(payload)) + payload)


def ok(request: dict, data: object) -> dict:
    return {'id': request['id'], 'status': 'ok', 'data': data}


def bind_unix(sock: socket.socket, path: str) -> None:
    if len(os.fsencode(path)) <= 107:
        sock.bind(path)
        return
    # Beyond sun_path: bind through the directory, the way the client connects.
    dir_fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        sock.bind(f'/proc/self/fd/{dir_fd}/{os.path.basename(path)}')
    finally:
        os.close(dir_fd)


class FaultServer:
    """A Unix socket server; `handler(conn, server)` plays each accepted connection in its own thread.

    `release` is set at teardown: handlers that hang or pace their output wait on it, so nothing outlives the test.
    """

    def __init__(self, path: str, handler: Callable[[socket.socket, FaultServer], None], backlog: int = 8):
        self.path = path
        self.handler = handler
        self.requests: list[dict] = []
        self.accepted = 0
        self.release = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bind_unix(self._listener, path)
        self._listener.listen(backlog)
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepting.start()

    def read(self, conn: socket.socket) -> dict | None:
        request = read_request(conn)
        if request is not None:
            self.requests.append(request)
        return request

    def _accept_loop(self) -> None:
        while not self.release.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError), conn:
            self.handler(conn, self)

    def stop(self) -> None:
        self.release.set()
        self._accepting.join(5)
        self._listener.close()
        # Wake handlers blocked in recv() on a client the test never closed.
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


def answer(data_for: Callable[[dict], object] = lambda request: STATS):
    """A well-behaved server: answers every request on the connection until the client leaves."""

    def handler(conn: socket.socket, server: FaultServer) -> None:
        while (request := server.read(conn)) is not None:
            send_json(conn, ok(request, data_for(request)))

    return handler


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    elapsed: list[float] = []
    start = time.monotonic()
    try:
        yield elapsed
    finally:
        elapsed.append(time.monotonic() - start)


def fails(exc_type: type[E], path: str, action: Callable[[], object], *hints: str) -> E:
    """Run `action`, assert it raised exc_type naming `path` and every hint, within the deadline; return the error."""
    with timed() as elapsed, pytest.raises(exc_type) as info:
        action()
    assert elapsed[0] < MARGIN, f'returned after {elapsed[0]:.2f}s'
    message = str(info.value)
    assert path in message
    assert info.value.path == path
    for hint in hints:
        assert hint in message
    return info.value


def str_fails(*args, **kwargs) -> str:
    return str(fails(*args, **kwargs))


def query_as_nobody(path: str, listener: socket.socket | None = None) -> tuple[str, str]:
    """Run the client in a forked child that dropped root, as the Agent's unprivileged user would be.

    No thread may run while forking (the child could inherit a held lock), so the parent answers the one request
    itself, on `listener` when given, instead of a fault-server thread.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        outcome = ('none', '')
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            ControlSocketClient(path, TIMEOUT).query('show stats')
            outcome = ('ok', '')
        except ControlSocketError as exc:
            outcome = (type(exc).__name__, str(exc))
        except BaseException as exc:
            outcome = ('crash', repr(exc))
        finally:
            os.write(write_end, json.dumps(outcome).encode())
            os._exit(0)
    os.close(write_end)
    if listener is not None:
        listener.settimeout(5)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            send_json(conn, ok(read_request(conn), STATS))
    with os.fdopen(read_end, 'rb') as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    kind, message = json.loads(data)
    return kind, message


def refuses_listeners(conn, srv):
    """A server older than `show listeners`: it refuses that command and answers the others with stats."""
    while (request := srv.read(conn)) is not None:
        if request['command'] == 'show listeners':
            send_json(conn, {'id': request['id'], 'status': 'error', 'error': 'Unknown show target: listeners'})
        else:
            send_json(conn, ok(request, STATS))


def show(client: ControlSocketClient, what: str):
    """`show <what>` through `client`: parsed as the monitor parses it where there is a parser, else the raw data."""
    parse = {'stats': parse_stats, 'config': parse_config, 'listeners': parse_listeners}.get(what, lambda data: data)
    return parse(client.query('show %s' % what))
