"""The control-socket client against fault servers: real Unix sockets served by a thread the test controls.

Every fault asserts the error type, that the message names the socket path and says what to do, and that the call
returned within its deadline plus a generous margin (not a tight timing assertion).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from datadog_checks.gunicorn import control_socket as cs
from datadog_checks.gunicorn.control_socket import (
    CommandFailed,
    ControlSocketClient,
    ControlSocketError,
    ProtocolError,
    SocketMissing,
    SocketPermissionDenied,
    SocketTimeout,
    WrongMaster,
)

from .gunicorn_env import wait_for

E = TypeVar('E', bound=ControlSocketError)

TIMEOUT = 0.3
# Far above TIMEOUT so a loaded CI machine never fails these, far below anything that would mean "no deadline".
MARGIN = 2.0

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


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Not pytest's tmp_path: its long names can pass the 107-byte sun_path limit, which has a test of its own.
    path = tempfile.mkdtemp(prefix='ctl-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve(sock_dir) -> Iterator[Callable[..., FaultServer]]:
    servers: list[FaultServer] = []

    def start(handler: Callable[[socket.socket, FaultServer], None], name: str = 'gunicorn.ctl', **kw) -> FaultServer:
        server = FaultServer(os.path.join(sock_dir, name), handler, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


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


# Framing


def test_frame_round_trip_and_layout():
    frame = cs.encode_frame({'id': 1, 'command': 'show stats', 'args': []})
    assert frame[:4] == struct.pack('>I', len(frame) - 4)
    assert json.loads(frame[4:]) == {'id': 1, 'command': 'show stats', 'args': []}
    assert cs.decode_frame(frame) == {'id': 1, 'command': 'show stats', 'args': []}
    assert cs.decode_frame(cs.encode_frame({'name': 'gunicorn: master [é]'})) == {'name': 'gunicorn: master [é]'}


@pytest.mark.parametrize(
    'data, fragment',
    [
        (b'\x00\x00', 'shorter than'),
        (struct.pack('>I', 10) + b'{}', 'announces 10'),
        (struct.pack('>I', 2) + b'{}{}', 'announces 2'),
        (struct.pack('>I', 2**31), 'cap'),
        (struct.pack('>I', 9) + b'{not json', 'not UTF-8 JSON'),
        (struct.pack('>I', 2) + b'\xff\xfe', 'not UTF-8 JSON'),
    ],
    ids=['short-prefix', 'short-body', 'trailing-bytes', 'oversize', 'garbage-json', 'not-utf8'],
)
def test_decode_frame_rejects(data, fragment):
    with pytest.raises(ProtocolError, match=fragment):
        cs.decode_frame(data)


def test_frame_cap_is_a_parameter():
    frame = cs.encode_frame({'x': 'y' * 100})
    with pytest.raises(ProtocolError, match='cap'):
        cs.decode_frame(frame, max_frame_bytes=50)
    with pytest.raises(ValueError, match='cap'):
        cs.encode_frame({'x': 'y' * 100}, max_frame_bytes=50)


# The allow-list


@pytest.mark.parametrize(
    'command',
    ['reload', 'shutdown', 'worker add', 'worker kill 1', 'dirty remove', 'show stats; reload', 'SHOW STATS', 'help'],
)
def test_only_read_only_commands_are_sent(serve, command):
    server = serve(answer())
    client = ControlSocketClient(server.path, TIMEOUT)
    with pytest.raises(ValueError, match='refusing'):
        client.query(command)
    # Refused before touching the socket: nothing connected, nothing sent.
    assert client.connects == 0
    assert server.accepted == 0 and server.requests == []


def test_refusal_comes_before_any_socket_error(sock_dir):
    with pytest.raises(ValueError):
        ControlSocketClient(os.path.join(sock_dir, 'absent.ctl'), TIMEOUT).query('reload')


def str_fails(*args, **kwargs) -> str:
    return str(fails(*args, **kwargs))


# The exchange


def test_one_connection_for_every_command_with_increasing_ids(serve):
    server = serve(answer(lambda request: {'command': request['command']}))
    with ControlSocketClient(server.path, TIMEOUT) as client:
        for command in sorted(cs.ALLOWED_COMMANDS):
            assert client.query(command) == {'command': command}
    assert server.accepted == 1 and client.connects == 1
    assert [r['id'] for r in server.requests] == [1, 2, 3, 4, 5]
    assert all(r['args'] == [] for r in server.requests)


def test_hang_without_reply_times_out(serve):
    server = serve(lambda conn, srv: (srv.read(conn), srv.release.wait(10)))
    client = ControlSocketClient(server.path, TIMEOUT)
    error = fails(SocketTimeout, server.path, client.show_stats, 'raise the timeout', 'waiting for the reply')
    assert isinstance(error.__cause__, TimeoutError)
    # A silent connection is given up after half the remaining time and the question asked again (Gunicorn can leak
    # a connection into a fork), but the whole exchange still ends at the one deadline.
    assert server.accepted >= 2


def test_one_deadline_for_the_whole_exchange(serve):
    # Every answer takes 0.1 s, far inside the 0.6 s timeout, so each call alone succeeds; in a row they share one
    # deadline and the sequence ends with a timeout soon after 0.6 s.
    def slow(conn, srv):
        while (request := srv.read(conn)) is not None:
            if srv.release.wait(0.1):
                return
            send_json(conn, ok(request, STATS))

    server = serve(slow)
    client = ControlSocketClient(server.path, 0.6)
    answered = []

    def keep_asking():
        while True:
            answered.append(client.show_stats())

    fails(SocketTimeout, server.path, keep_asking)
    assert 2 <= len(answered) < 6


def test_a_silent_connection_is_replaced(serve):
    # What a control connection leaked into a forked worker looks like: accepted, never answered, never closed.
    def silent_first(conn, srv):
        request = srv.read(conn)
        if srv.accepted == 1:
            srv.release.wait(10)
        else:
            send_json(conn, ok(request, STATS))

    server = serve(silent_first)
    with ControlSocketClient(server.path, 1.0) as client, timed() as elapsed:
        assert client.show_stats().pid == 1000
    assert client.connects == 2 and 0.4 < elapsed[0] < MARGIN


def test_a_slow_drip_cannot_extend_the_deadline(serve):
    # A byte every 50 ms never trips a per-recv timeout; only the shared deadline stops it.
    def drip(conn, srv):
        request = srv.read(conn)
        frame = cs.encode_frame(ok(request, STATS))
        for byte in frame:
            conn.sendall(bytes([byte]))
            if srv.release.wait(0.05):
                return

    server = serve(drip)
    fails(SocketTimeout, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats)


def test_server_closing_before_the_reply(serve):
    server = serve(lambda conn, srv: srv.read(conn))
    message = str_fails(
        ProtocolError, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats, 'another program'
    )
    # Read-only commands are asked again on a fresh connection, within the deadline and with a pause in between.
    assert 'closed the connection' in message
    assert 2 <= server.accepted <= 1 + TIMEOUT / cs._RECONNECT_INTERVAL_SECONDS


def test_server_closing_mid_frame(serve):
    def half(conn, srv):
        srv.read(conn)
        conn.sendall(struct.pack('>I', 100) + b'{"id": 1, ')

    server = serve(half)
    message = str_fails(
        ProtocolError, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats, 'another program'
    )
    assert 'mid-frame' in message
    assert server.accepted == 1


def test_server_closing_inside_the_length_prefix(serve):
    def half(conn, srv):
        srv.read(conn)
        conn.sendall(b'\x00\x00')

    server = serve(half)
    assert 'mid-frame' in str_fails(ProtocolError, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats)


@pytest.mark.parametrize(
    'payload, fragment',
    [
        (b'{"id": 1, "status": "ok", "data": ', 'not UTF-8 JSON'),
        (b'\xff' * 8, 'not UTF-8 JSON'),
        (b'[1, 2]', 'not a JSON object'),
        (b'{"id": 1, "status": "maybe"}', "status 'maybe'"),
        (b'{"id": true, "status": "ok", "data": {}}', 'with id True'),
    ],
    ids=['garbage-json', 'not-utf8', 'not-an-object', 'unknown-status', 'bool-id'],
)
def test_malformed_replies(serve, payload, fragment):
    def bad(conn, srv):
        srv.read(conn)
        send_raw(conn, payload)
        srv.release.wait(10)

    server = serve(bad)
    assert fragment in str_fails(ProtocolError, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats)


def test_huge_length_prefix_is_refused_before_reading(serve):
    # The body never comes: if the client tried to read it, this would be a timeout, not a protocol error.
    def huge(conn, srv):
        srv.read(conn)
        conn.sendall(struct.pack('>I', 2**31))
        srv.release.wait(10)

    server = serve(huge)
    with timed() as elapsed:
        message = str_fails(
            ProtocolError, server.path, ControlSocketClient(server.path, 5.0).show_stats, 'max_frame_bytes'
        )
    assert elapsed[0] < 1.0
    assert str(2**31) in message


def test_wrong_reply_id(serve):
    def wrong(conn, srv):
        request = srv.read(conn)
        send_json(conn, {'id': request['id'] + 1, 'status': 'ok', 'data': STATS})
        srv.release.wait(10)

    server = serve(wrong)
    assert 'with id 2' in str_fails(ProtocolError, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats)


def refuses_listeners(conn, srv):
    """A server older than `show listeners`: it refuses that command and answers the others with stats."""
    while (request := srv.read(conn)) is not None:
        if request['command'] == 'show listeners':
            send_json(conn, {'id': request['id'], 'status': 'error', 'error': 'Unknown show target: listeners'})
        else:
            send_json(conn, ok(request, STATS))


def test_error_reply_keeps_the_connection(serve):
    server = serve(refuses_listeners)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        message = str_fails(CommandFailed, server.path, client.show_listeners, 'older than the command')
        assert 'Unknown show target' in message
        assert client.show_stats().pid == 1000
    assert server.accepted == 1


def test_a_dropped_connection_is_reopened(serve):
    # What a Gunicorn master does around every fork: it closes its control server and every open connection.
    def one_answer_per_connection(conn, srv):
        request = srv.read(conn)
        send_json(conn, ok(request, STATS))

    server = serve(one_answer_per_connection)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        client.show_stats()
        client.show_stats()
    assert client.connects == 2
    # Id 2 went to the closed connection; the retry gets a new id, so a late reply can never be mistaken for it.
    assert [r['id'] for r in server.requests] == [1, 3]


def test_several_drops_in_a_row_are_survived(serve):
    # A reload forks once per worker, each fork dropping the connections of the moment.
    def drop_three_then_answer(conn, srv):
        request = srv.read(conn)
        if srv.accepted > 3:
            send_json(conn, ok(request, STATS))

    server = serve(drop_three_then_answer)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert client.show_stats().pid == 1000
    assert client.connects == 4 and [r['id'] for r in server.requests] == [1, 2, 3, 4]


def test_reconnect_waits_for_the_socket_to_come_back(sock_dir):
    # Between closing and re-creating its socket the master leaves no file; the reconnect looks again until the
    # deadline instead of reporting a missing socket.
    path = os.path.join(sock_dir, 'gunicorn.ctl')

    def answer_once_then_vanish(conn, srv):
        request = srv.read(conn)
        send_json(conn, ok(request, STATS))

    first = FaultServer(path, answer_once_then_vanish)
    second = None
    try:
        client = ControlSocketClient(path, 1.5)
        client.show_stats()
        first.stop()
        os.unlink(path)

        def restart():
            nonlocal second
            second = FaultServer(path, answer())

        timer = threading.Timer(0.1, restart)
        timer.start()
        assert client.show_stats().pid == 1000
        timer.join()
        assert client.connects == 2
        client.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_missing_socket(sock_dir):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    error = fails(SocketMissing, path, ControlSocketClient(path, TIMEOUT).show_stats, 'older than 25.1', 'configure')
    assert isinstance(error.__cause__, FileNotFoundError)


def test_missing_directory(sock_dir):
    path = os.path.join(sock_dir, 'no-such-dir', 'gunicorn.ctl')
    fails(SocketMissing, path, ControlSocketClient(path, TIMEOUT).show_stats, 'configure')


def test_stale_socket_file(sock_dir):
    # A socket file whose listener is gone (the process exited without unlinking it): ECONNREFUSED.
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    fails(SocketMissing, path, ControlSocketClient(path, TIMEOUT).show_stats, 'stale', 'nothing listens')


def test_regular_file_at_the_path(sock_dir):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with open(path, 'w'):
        pass
    fails(SocketMissing, path, ControlSocketClient(path, TIMEOUT).show_stats)


def test_full_listen_backlog(serve):
    # A master whose control thread never accepts: once its backlog is full, connect(2) fails at once with EAGAIN.
    server = serve(answer(), backlog=0)
    server.release.set()  # stop accepting
    wait_for(lambda: not server._accepting.is_alive(), 5, 'the fault server to stop accepting')
    held = []
    try:

        def backlog_full():
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.setblocking(False)
            try:
                conn.connect(server.path)
            except BlockingIOError:
                conn.close()
                return True
            held.append(conn)
            return False

        wait_for(backlog_full, 5, 'the listen backlog to fill')
        fails(SocketTimeout, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats, 'not accepting')
    finally:
        for conn in held:
            conn.close()


def test_long_path_beyond_sun_path(serve, sock_dir):
    # /host/run/user/... under a container mount can pass the 107-byte sun_path limit.
    name = os.path.join(*(['d' * 40] * 3), 'gunicorn.ctl')
    os.makedirs(os.path.join(sock_dir, os.path.dirname(name)))
    server = serve(answer(), name=name)
    assert len(server.path) > 107
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert client.show_stats().pid == 1000
    server.stop()
    os.unlink(server.path)
    fails(SocketMissing, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats)


# Permissions


def test_permission_message_names_owners_modes_and_the_fix(sock_dir):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
    os.chmod(path, 0o600)
    os.chmod(sock_dir, 0o700)
    message = cs.permission_denied_message(path, OSError(errno.EACCES, 'Permission denied'))
    own = os.stat(path)
    assert path in message and 'Permission denied' in message
    assert f'socket {path}: owner uid {own.st_uid} gid {own.st_gid} mode 0600' in message
    assert f'parent {sock_dir}: owner uid {own.st_uid} gid {own.st_gid} mode 0700' in message
    assert f'the Agent runs as uid {os.getuid()}' in message
    assert 'control_socket_mode = 0o660' in message and 'group' in message and 'traversable' in message


def test_permission_message_when_nothing_can_be_stat(sock_dir):
    path = os.path.join(sock_dir, 'gone', 'gunicorn.ctl')
    message = cs.permission_denied_message(path, PermissionError(errno.EACCES, 'Permission denied'))
    assert 'not stat-able' in message and 'control_socket_mode = 0o660' in message


def test_permission_error_is_mapped_at_the_boundary(sock_dir, monkeypatch):
    path = os.path.join(sock_dir, 'gunicorn.ctl')

    def refuse(sock, target):
        raise OSError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(cs, '_connect_unix', refuse)
    fails(SocketPermissionDenied, path, ControlSocketClient(path, TIMEOUT).show_stats, 'control_socket_mode = 0o660')


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
            ControlSocketClient(path, TIMEOUT).show_stats()
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


@pytest.fixture
def listener(sock_dir) -> Iterator[tuple[socket.socket, str]]:
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen(1)
        yield sock, path


@pytest.mark.skipif(os.geteuid() != 0, reason='dropping to another user needs root')
@pytest.mark.parametrize('socket_mode, dir_mode', [(0o000, 0o755), (0o666, 0o700)], ids=['socket-000', 'dir-0700'])
def test_real_permission_denied_for_an_unprivileged_user(listener, sock_dir, socket_mode, dir_mode):
    _, path = listener
    os.chmod(path, socket_mode)
    os.chmod(sock_dir, dir_mode)
    with timed() as elapsed:
        kind, message = query_as_nobody(path)
    assert elapsed[0] < MARGIN
    assert kind == 'SocketPermissionDenied', message
    assert path in message and 'control_socket_mode = 0o660' in message
    assert f'mode {socket_mode:04o}' in message or 'not stat-able' in message
    assert f'mode {dir_mode:04o}' in message
    assert 'the Agent runs as uid 65534' in message


@pytest.mark.skipif(os.geteuid() != 0, reason='dropping to another user needs root')
def test_the_suggested_fix_works_for_an_unprivileged_user(listener, sock_dir):
    # control_socket_mode = 0o660 plus a group the Agent's user belongs to, and a directory that group can traverse.
    sock, path = listener
    os.chown(path, 0, 65534)
    os.chmod(path, 0o660)
    os.chown(sock_dir, 0, 65534)
    os.chmod(sock_dir, 0o710)
    assert query_as_nobody(path, sock) == ('ok', '')


def test_every_os_error_is_mapped():
    # httpx's rule: no exception type escapes the boundary unmapped.
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for exc_type in {OSError, *subclasses(OSError)}:
        try:
            exc = exc_type(errno.EIO, 'boom')
        except TypeError:
            continue
        mapped = cs._map_error(exc, '/run/x/gunicorn.ctl', 'connecting', 1.0)
        assert isinstance(mapped, ControlSocketError), exc_type
        assert '/run/x/gunicorn.ctl' in str(mapped)
    assert isinstance(cs._map_error(ValueError('x'), '/p', 'reading', 1.0), ProtocolError)
    assert isinstance(cs._map_error(struct.error('x'), '/p', 'reading', 1.0), ProtocolError)


# Which master answers


def test_verify_master_accepts_its_own_master(serve):
    server = serve(answer())
    stats = cs.verify_master(ControlSocketClient(server.path, TIMEOUT), 1000)
    assert stats.pid == 1000


def test_verify_master_rejects_another_master(serve):
    server = serve(answer())
    client = ControlSocketClient(server.path, TIMEOUT)
    message = str_fails(WrongMaster, server.path, lambda: cs.verify_master(client, 2000), '--control-socket')
    assert '1000' in message and '2000' in message
    with pytest.raises(WrongMaster) as info:
        cs.verify_master(ControlSocketClient(server.path, TIMEOUT), 2000)
    assert (info.value.expected_pid, info.value.actual_pid) == (2000, 1000)


def test_connect_verified_skips_missing_and_foreign_sockets(serve, sock_dir):
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    ours = serve(answer(), name='ours.ctl')
    missing = os.path.join(sock_dir, 'missing.ctl')
    client, stats = cs.connect_verified([missing, other.path, ours.path], 1000, TIMEOUT)
    with client:
        assert client.path == ours.path and stats.pid == 1000
        # Still connected: the rest of the run reuses the connection and its deadline.
        assert client.show_config().workers is None
    assert ours.accepted == 1


def test_connect_verified_reports_the_most_actionable_failure(serve, sock_dir):
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    missing = os.path.join(sock_dir, 'missing.ctl')
    with pytest.raises(WrongMaster) as info:
        cs.connect_verified([missing, other.path], 1000, TIMEOUT)
    message = str(info.value)
    assert 'tried 2 paths' in message and missing in message and other.path in message
    assert info.value.actual_pid == 2000
    assert isinstance(info.value.__cause__, WrongMaster)

    with pytest.raises(SocketMissing, match='missing.ctl'):
        cs.connect_verified([missing], 1000, TIMEOUT)
    with pytest.raises(SocketMissing, match='disabled'):
        cs.connect_verified([], 1000, TIMEOUT)


def test_connect_verified_gives_each_candidate_a_share_of_one_deadline(serve):
    # A silent socket first in the list (another master, stopped) must not starve ours.
    silent = serve(lambda conn, srv: (srv.read(conn), srv.release.wait(10)), name='silent.ctl')
    ours = serve(answer(), name='ours.ctl')
    with timed() as elapsed:
        client, stats = cs.connect_verified([silent.path, ours.path], 1000, 0.6)
    with client:
        assert client.path == ours.path and stats.pid == 1000
        assert 0.2 < elapsed[0] < MARGIN
        # The rest of the run keeps the one overall deadline, not the candidate's share.
        assert 0 < client.deadline.remaining() < 0.6 - elapsed[0] + 0.01
    with timed() as elapsed, pytest.raises(SocketTimeout) as info:
        cs.connect_verified([silent.path, silent.path], 1000, TIMEOUT)
    assert elapsed[0] < MARGIN and 'tried 2 paths' in str(info.value)


# Where the socket is


def home(uid: int) -> str | None:
    return {0: '/root', 1000: '/home/app'}.get(uid)


@pytest.mark.parametrize(
    'uid, cmdline, cwd, root, expected',
    [
        (
            1000,
            ['gunicorn: master [app]', '', ''],
            None,
            '',
            ['/run/user/1000/gunicorn.ctl', '/home/app/.gunicorn/gunicorn.ctl'],
        ),
        (
            1000,
            ['/venv/bin/python', '/venv/bin/gunicorn', '--control-socket', '/srv/app.ctl', 'app:app'],
            '/srv',
            '',
            ['/srv/app.ctl', '/run/user/1000/gunicorn.ctl', '/home/app/.gunicorn/gunicorn.ctl', '/srv/gunicorn.ctl'],
        ),
        (
            1000,
            ['gunicorn', '--control-socket=run/app.ctl', 'app:app'],
            '/srv',
            '',
            [
                '/srv/run/app.ctl',
                '/run/user/1000/gunicorn.ctl',
                '/home/app/.gunicorn/gunicorn.ctl',
                '/srv/gunicorn.ctl',
            ],
        ),
        # A relative explicit path without the cwd cannot be resolved (cwd needs privileges).
        (
            1000,
            ['gunicorn', '--control-socket', 'app.ctl'],
            None,
            '',
            ['/run/user/1000/gunicorn.ctl', '/home/app/.gunicorn/gunicorn.ctl'],
        ),
        # The last occurrence wins, as with argparse; --control-socket-mode is another option.
        (
            0,
            ['gunicorn', '--control-socket', '/a.ctl', '--control-socket-mode', '432', '--control-socket=/b.ctl'],
            None,
            '',
            ['/b.ctl', '/run/user/0/gunicorn.ctl', '/root/.gunicorn/gunicorn.ctl'],
        ),
        # No passwd entry for the uid (the Agent's container may not know it): no home candidate.
        (4242, [], '/srv', '', ['/run/user/4242/gunicorn.ctl', '/srv/gunicorn.ctl']),
        # Duplicates removed: the explicit path is the 25.1.0 default in the cwd.
        (
            0,
            ['gunicorn', '--control-socket', 'gunicorn.ctl'],
            '/srv/',
            '',
            ['/srv/gunicorn.ctl', '/run/user/0/gunicorn.ctl', '/root/.gunicorn/gunicorn.ctl'],
        ),
        # The host's filesystem seen from a container.
        (
            1000,
            ['gunicorn', '--control-socket', '/srv/app.ctl'],
            None,
            '/host/',
            ['/host/srv/app.ctl', '/host/run/user/1000/gunicorn.ctl', '/host/home/app/.gunicorn/gunicorn.ctl'],
        ),
        (1000, ['gunicorn', '--no-control-socket', 'app:app'], '/srv', '', []),
        # A trailing --control-socket without its value is ignored.
        (0, ['gunicorn', '--control-socket'], None, '', ['/run/user/0/gunicorn.ctl', '/root/.gunicorn/gunicorn.ctl']),
    ],
    ids=[
        'titled',
        'explicit',
        'explicit-relative',
        'relative-no-cwd',
        'last-wins',
        'no-home',
        'dedup',
        'root',
        'disabled',
        'dangling',
    ],
)
def test_candidate_paths(uid, cmdline, cwd, root, expected):
    assert cs.candidate_paths(uid, cmdline, cwd, root=root, home_of=home) == expected


def test_home_directory_uses_passwd():
    assert cs.home_directory(0) == '/root'
    assert cs.home_directory(2**31 - 2) is None


# Typed replies

ALL = {
    'arbiter': {'pid': 1000, 'type': 'arbiter', 'role': 'master'},
    'web_workers': [
        {'pid': 1004, 'type': 'web', 'age': 2, 'booted': False, 'last_heartbeat': 2.02},
        {'pid': 1003, 'type': 'web', 'age': 1, 'booted': False, 'last_heartbeat': 2.0},
    ],
    'web_worker_count': 2,
    'dirty_arbiter': {'pid': 1002, 'type': 'dirty_arbiter', 'role': 'dirty master'},
    'dirty_workers': [{'pid': 1005, 'age': 1, 'apps': ['dirty:Tasks'], 'booted': False, 'last_heartbeat': 2.04}],
    'dirty_worker_count': 1,
}
CONFIG = {
    'bind': ['127.0.0.1:45169'],
    'workers': 2,
    'worker_class': "<class 'gunicorn.workers.sync.SyncWorker'>",
    'threads': 1,
    'timeout': 30,
    'graceful_timeout': 30,
    'keepalive': 2,
    'max_requests': 0,
    'max_requests_jitter': 0,
    'worker_connections': 1000,
    'preload_app': False,
    'daemon': False,
    'pidfile': None,
    'proc_name': 'app',
    'reload': False,
    'dirty_workers': 1,
    'dirty_apps': ['dirty:Tasks'],
    'dirty_timeout': 300,
    'control_socket': '/run/user/1000/gunicorn.ctl',
    'control_socket_disable': False,
}


def test_parse_stats():
    assert cs.parse_stats(STATS) == cs.Stats(
        pid=1000,
        uptime_seconds=2.07,
        workers_current=2,
        workers_target=2,
        workers_spawned=2,
        workers_killed=0,
        reloads=0,
        dirty_arbiter_pid=1002,
    )


def test_parse_all_sorts_by_age():
    processes = cs.parse_all(ALL)
    assert processes.arbiter_pid == 1000 and processes.dirty_arbiter_pid == 1002
    assert [(w.pid, w.age, w.last_heartbeat_seconds) for w in processes.web_workers] == [
        (1003, 1, 2.0),
        (1004, 2, 2.02),
    ]
    assert processes.dirty_workers == (
        cs.WorkerHeartbeat(pid=1005, age=1, last_heartbeat_seconds=2.04, apps=('dirty:Tasks',)),
    )


def test_parse_workers():
    data = {'workers': [{'pid': 7, 'age': 1, 'booted': False, 'aborted': False, 'last_heartbeat': 0.5}], 'count': 1}
    assert cs.parse_workers(data) == (cs.WorkerHeartbeat(pid=7, age=1, last_heartbeat_seconds=0.5),)


def test_parse_config():
    config = cs.parse_config(CONFIG)
    assert config.worker_class == 'sync' and config.worker_class_raw == CONFIG['worker_class']
    assert (config.workers, config.threads, config.worker_connections) == (2, 1, 1000)
    assert (config.timeout_seconds, config.graceful_timeout_seconds, config.keepalive_seconds) == (30.0, 30.0, 2.0)
    assert (config.max_requests, config.max_requests_jitter) == (0, 0)
    assert config.bind == ('127.0.0.1:45169',) and config.preload_app is False and config.proc_name == 'app'
    assert (config.dirty_workers, config.dirty_apps, config.dirty_timeout_seconds) == (1, ('dirty:Tasks',), 300.0)
    assert config.control_socket == '/run/user/1000/gunicorn.ctl'


def test_parse_listeners():
    data = {
        'listeners': [
            {'address': 'http://127.0.0.1:8000', 'fd': 5, 'type': 'tcp'},
            {'address': 'unix:/run/app.sock', 'fd': 6, 'type': 'unix'},
            'junk',
            {'address': 7, 'fd': '5'},
        ],
        'count': 4,
    }
    assert cs.parse_listeners(data) == (
        cs.Listener('http://127.0.0.1:8000', 5, 'tcp'),
        cs.Listener('unix:/run/app.sock', 6, 'unix'),
        cs.Listener(None, None, None),
    )


@pytest.mark.parametrize('data', [None, [], 'x', 3, {}, {'workers': 'x', 'web_workers': {}, 'listeners': None}])
def test_parsers_tolerate_any_shape(data):
    assert cs.parse_stats(data) == cs.Stats(None, None, None, None, None, None, None, None)
    assert cs.parse_all(data) == cs.Processes(None, (), None, ())
    assert cs.parse_workers(data) == ()
    assert cs.parse_listeners(data) == ()
    config = cs.parse_config(data)
    assert config.worker_class is None and config.bind == () and config.workers is None


def test_wrong_typed_fields_become_none():
    stats = cs.parse_stats(dict(STATS, pid='1000', uptime=float('nan'), workers_current=True, reloads=1.5, extra=1))
    assert (stats.pid, stats.uptime_seconds, stats.workers_current, stats.reloads) == (None, None, None, None)
    assert stats.workers_target == 2
    config = cs.parse_config(dict(CONFIG, timeout='30', bind='127.0.0.1:1', preload_app=1, worker_class=None))
    assert config.timeout_seconds is None and config.preload_app is None and config.worker_class is None
    assert config.bind == ('127.0.0.1:1',)
    workers = cs.parse_all(
        {
            'web_workers': [
                {'pid': None, 'age': 1},
                {'pid': 5, 'age': 'old', 'last_heartbeat': float('inf')},
                {'pid': 6, 'age': 1, 'last_heartbeat': 1, 'apps': [1, 'a']},
            ]
        }
    ).web_workers
    assert workers == (cs.WorkerHeartbeat(6, 1, 1.0, ('a',)), cs.WorkerHeartbeat(5, None, None))


@pytest.mark.parametrize(
    'raw, short',
    [
        ("<class 'gunicorn.workers.sync.SyncWorker'>", 'sync'),
        ("<class 'gunicorn.workers.gthread.ThreadWorker'>", 'gthread'),
        ("<class 'gunicorn.workers.ggevent.GeventWorker'>", 'gevent'),
        ("<class 'gunicorn.workers.ggevent.GeventPyWSGIWorker'>", 'gevent'),
        ("<class 'gunicorn.workers.gtornado.TornadoWorker'>", 'tornado'),
        ("<class 'gunicorn.workers.gasgi.ASGIWorker'>", 'asgi'),
        ("<class 'gunicorn.workers.geventlet.EventletWorker'>", 'eventlet'),
        ("<class 'uvicorn.workers.UvicornWorker'>", 'uvicorn.workers.UvicornWorker'),
        ('gthread', 'gthread'),
        ('sync', 'sync'),
        ('gevent_pywsgi', 'gevent'),
        ('egg:gunicorn#gevent', 'gevent'),
        ('gunicorn.workers.gthread.ThreadWorker', 'gthread'),
        ('', None),
        (None, None),
    ],
)
def test_worker_class_name(raw, short):
    assert cs.worker_class_name(raw) == short


# Pipelining: several requests in one write, replies read back in order


def replies_of(client: ControlSocketClient, *commands: str) -> list:
    return list(client.query_many(commands))


def test_requests_are_pipelined_in_one_connection(serve):
    # This server reads both requests before answering either: a client waiting for the first reply before sending
    # the second would time out here.
    def both_then_answer(conn, srv):
        requests = [srv.read(conn), srv.read(conn)]
        for request in requests:
            send_json(conn, ok(request, {'command': request['command']}))
        srv.release.wait(10)

    server = serve(both_then_answer)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert replies_of(client, 'show stats', 'show workers') == [
            {'command': 'show stats'},
            {'command': 'show workers'},
        ]
    assert client.connects == 1 and [r['id'] for r in server.requests] == [1, 2]


def test_pipelined_replies_keep_their_order_and_ids_across_exchanges(serve):
    server = serve(answer(lambda request: {'command': request['command']}))
    with ControlSocketClient(server.path, TIMEOUT) as client:
        commands = sorted(cs.ALLOWED_COMMANDS)
        assert replies_of(client, *commands) == [{'command': c} for c in commands]
        assert client.query('show stats') == {'command': 'show stats'}
        assert replies_of(client, 'show config', 'show all') == [{'command': 'show config'}, {'command': 'show all'}]
    assert server.accepted == 1 and [r['id'] for r in server.requests] == list(range(1, 9))


def test_a_pipelined_error_reply_does_not_stop_the_others(serve):
    server = serve(refuses_listeners)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        stats, failed, workers = replies_of(client, 'show stats', 'show listeners', 'show workers')
    assert stats == workers == STATS
    assert isinstance(failed, CommandFailed) and 'Unknown show target' in str(failed) and failed.path == server.path
    assert server.accepted == 1


def test_every_pipelined_command_is_checked_before_anything_is_sent(serve):
    server = serve(answer())
    client = ControlSocketClient(server.path, TIMEOUT)
    with pytest.raises(ValueError, match='refusing'):
        client.query_many(['show stats', 'reload'])
    assert client.connects == 0 and server.accepted == 0


def test_only_the_unanswered_requests_are_asked_again_after_a_drop(serve):
    # A fork right after the first reply: Gunicorn closes the connection with the second request read or not.
    def one_answer_per_connection(conn, srv):
        send_json(conn, ok(srv.read(conn), {'connection': srv.accepted}))

    server = serve(one_answer_per_connection)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert replies_of(client, 'show stats', 'show workers') == [{'connection': 1}, {'connection': 2}]
    assert client.connects == 2
    # The first connection was closed with `show workers` unread (ECONNRESET for the client, not only EOF); the
    # retry sends it alone, under a new id.
    assert [(r['id'], r['command']) for r in server.requests] == [(1, 'show stats'), (3, 'show workers')]


def test_a_server_that_closes_between_two_pipelined_replies(serve):
    # Both requests read, only the first answered, then a clean close: EOF where the second reply should start.
    def read_both_answer_one(conn, srv):
        if srv.accepted == 1:
            first, _ = srv.read(conn), srv.read(conn)
            send_json(conn, ok(first, {'n': 1}))
        else:
            answer(lambda request: {'n': 2})(conn, srv)

    server = serve(read_both_answer_one)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        replies = client.query_many(('show stats', 'show workers'))
        assert next(replies) == {'n': 1}
        assert list(replies) == [{'n': 2}]
    assert client.connects == 2
    assert [(r['id'], r['command']) for r in server.requests][-1] == (3, 'show workers')


def test_a_server_that_answers_only_the_first_pipelined_request_times_out(serve):
    def stats_only(conn, srv):
        while (request := srv.read(conn)) is not None:
            if request['command'] == 'show stats':
                send_json(conn, ok(request, STATS))
        srv.release.wait(10)

    server = serve(stats_only)
    client = ControlSocketClient(server.path, TIMEOUT)
    replies = client.query_many(('show stats', 'show workers'))
    assert next(replies) == STATS
    fails(SocketTimeout, server.path, lambda: next(replies), "'show workers'")
    # The silent second reply was given up once, asked again on a fresh connection, then the deadline came.
    assert server.accepted >= 2


@pytest.mark.parametrize(
    'second, error, fragment',
    [
        (struct.pack('>I', 2**31), ProtocolError, 'max_frame_bytes'),
        (struct.pack('>I', 5) + b'{oops', ProtocolError, 'not UTF-8 JSON'),
        (struct.pack('>I', 100) + b'{"id"', ProtocolError, 'mid-frame'),
    ],
    ids=['huge-length', 'garbage', 'cut'],
)
def test_a_bad_second_reply_is_mapped_and_leaves_the_first(serve, second, error, fragment):
    def good_then_bad(conn, srv):
        first, _ = srv.read(conn), srv.read(conn)
        # Both frames in one write: the client gets them from one recv() and must still split them right.
        conn.sendall(cs.encode_frame(ok(first, STATS)) + second)
        if fragment != 'mid-frame':
            srv.release.wait(10)

    server = serve(good_then_bad)
    client = ControlSocketClient(server.path, 5.0)
    replies = client.query_many(('show stats', 'show workers'))
    assert next(replies) == STATS
    with timed() as elapsed:
        assert fragment in str_fails(error, server.path, lambda: next(replies))
    assert elapsed[0] < 1.0  # refused or noticed at once, not waited for until the 5 s deadline
    assert client._sock is None


def test_an_abandoned_iterator_does_not_put_the_connection_out_of_step(serve):
    server = serve(answer(lambda request: {'command': request['command']}))
    with ControlSocketClient(server.path, TIMEOUT) as client:
        replies = client.query_many(('show stats', 'show workers', 'show config'))
        assert next(replies) == {'command': 'show stats'}
        del replies
        # Two replies were still due on the old connection: a new one is opened rather than reading them as these.
        assert client.query('show listeners') == {'command': 'show listeners'}
    assert client.connects == 2


def test_a_slow_answer_is_waited_for_with_precise_timeouts(serve):
    # Slower than the short blocking first wait: the client goes on waiting, on the same connection.
    def slow(conn, srv):
        while (request := srv.read(conn)) is not None:
            if srv.release.wait(cs._QUICK_WAIT_SECONDS * 3):
                return
            send_json(conn, ok(request, STATS))

    server = serve(slow)
    with ControlSocketClient(server.path, 2.0) as client:
        assert replies_of(client, 'show stats', 'show workers') == [STATS, STATS]
    assert client.connects == 1


def test_a_send_that_cannot_finish_is_bounded_by_the_deadline(serve, monkeypatch):
    # Allow-listed requests are too small to fill a socket buffer; a peer that never reads a large one shows that
    # the send still ends at the deadline.
    server = serve(lambda conn, srv: srv.release.wait(10))
    monkeypatch.setattr(cs, '_request', lambda request_id, command: cs.encode_frame({'pad': 'x' * (3 << 20)}))
    error = fails(SocketTimeout, server.path, ControlSocketClient(server.path, TIMEOUT).show_stats, 'sending')
    assert isinstance(error.__cause__, TimeoutError)


def test_the_request_frames_are_what_encode_frame_gives():
    for command in cs.ALLOWED_COMMANDS:
        assert cs._request(7, command) == cs.encode_frame({'id': 7, 'command': command, 'args': []})


def test_verified_exchange_reads_nothing_more_from_another_master(serve):
    # The second reply is garbage: reading it would be a ProtocolError, so WrongMaster proves it was not read.
    def other_master(conn, srv):
        first, _ = srv.read(conn), srv.read(conn)
        send_json(conn, ok(first, dict(STATS, pid=2000)))
        send_raw(conn, b'{oops')
        srv.release.wait(10)

    server = serve(other_master)
    with pytest.raises(WrongMaster) as info:
        cs.verified_exchange([server.path], 1000, ['show workers'], TIMEOUT)
    assert info.value.actual_pid == 2000


def test_verified_exchange_gives_the_other_replies_after_the_stats(serve):
    server = serve(answer(lambda request: STATS if request['command'] == 'show stats' else {'workers': []}))
    client, stats, replies = cs.verified_exchange([server.path], 1000, ['show workers', 'show config'], TIMEOUT)
    with client:
        assert stats.pid == 1000
        assert list(replies) == [{'workers': []}, {'workers': []}]
    assert server.accepted == 1 and [r['command'] for r in server.requests] == [
        'show stats',
        'show workers',
        'show config',
    ]


def reference_heartbeats(entries):
    """parse_workers' rules spelled with the per-field helpers, to check the inlined version against."""
    workers = []
    for entry in entries:
        entry = cs._dict(entry)
        pid = cs._int(entry.get('pid'))
        if pid is not None:
            workers.append(
                cs.WorkerHeartbeat(
                    pid, cs._int(entry.get('age')), cs._float(entry.get('last_heartbeat')), cs._strs(entry.get('apps'))
                )
            )
    return tuple(sorted(workers, key=lambda w: (w.age is None, w.age or 0)))


def test_parse_workers_follows_the_field_rules_for_any_values():
    values = [
        None,
        True,
        False,
        0,
        1,
        2,
        -3,
        2**70,
        10**400,
        0.5,
        1.0,
        -2.5,
        float('nan'),
        float('inf'),
        '1',
        [],
        {},
        ['a', 1],
        'app',
    ]
    entries = [
        {'pid': pid, 'age': age, 'last_heartbeat': beat, 'apps': apps}
        for pid in values[:8]
        for age in values[:9]
        for beat in values
        for apps in (None, 'app', ['a', 1], 3)
    ]
    entries += ['junk', None, {}, {'pid': 9}, [1]]
    parsed = cs.parse_workers({'workers': entries})
    assert parsed == reference_heartbeats(entries)
    known = tuple(w.last_heartbeat_seconds for w in parsed if w.last_heartbeat_seconds is not None)
    assert cs.heartbeat_ages({'workers': entries}) == known
    for data in (None, [], {}, {'workers': 'x'}, {'workers': [None]}):
        assert cs.heartbeat_ages(data) == ()
    assert all(type(w.last_heartbeat_seconds) in (float, type(None)) for w in parsed)
