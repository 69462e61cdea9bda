"""A read-only client for Gunicorn's control socket (Gunicorn 25.1+, gunicorn/ctl/).

Protocol: a Unix stream socket; every message is one frame, a 4-byte big-endian payload length followed by that
many bytes of UTF-8 JSON. A request is `{"id": N, "command": "show stats", "args": []}`; the reply repeats the id
and is either `{"id": N, "status": "ok", "data": {...}}` or `{"id": N, "status": "error", "error": "..."}`.
Several requests may share one connection, and may all be written before the first reply is read: the server
handles a connection's frames one after another and answers them in order. The socket has no authentication besides
its file mode, and the same protocol carries commands that change the server (`worker kill`, `reload`, `shutdown`),
so this client refuses to send anything but a fixed list of `show` commands.

Here: framing and the client with its single deadline and its single error boundary (`ControlSocketClient`). Where
a master's socket is and which master answers are in locate.py, what the replies mean in replies.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from ..beneath import SELF_FD

# Gunicorn accepts frames up to 16 MiB; its replies are a few KiB even with hundreds of workers, so a smaller cap
# bounds what a confused or hostile peer can make the Agent allocate.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 1.0

ALLOWED_COMMANDS = frozenset({'show stats', 'show workers', 'show all', 'show config', 'show listeners'})

_LENGTH = struct.Struct('>I')
# sun_path is 108 bytes including the terminating NUL (unix(7)); longer paths are reached through a directory fd.
_SUN_PATH_MAX = 107
# After the server dropped a connection, how often to ask again while the master re-creates its socket.
_RECONNECT_INTERVAL_SECONDS = 0.01
# Below this much time left, a silent connection is waited on to the deadline instead of being replaced.
_MIN_ATTEMPT_SECONDS = 0.05
# The first wait for a reply, a blocking recv() under SO_RCVTIMEO. The kernel ends such a wait at a timer tick, up to
# two ticks late (8 ms at HZ=250, 20 ms at HZ=100), so it is used only when the slack still fits in the wait.
_QUICK_WAIT_SECONDS = 0.05
_TIMER_SLACK_SECONDS = 0.05
_QUICK_WAIT_TIMEVAL = struct.pack('@ll', 0, int(_QUICK_WAIT_SECONDS * 1e6))

# Gunicorn re-creates the socket on every fork, so a manual chgrp/chmod of the file does not last: the group must
# come from the master's own group or from a setgid directory.
_PERMISSION_FIX = (
    'usual fix: start Gunicorn with control_socket_mode = 0o660 (--control-socket-mode 0o660) and a group the '
    "Agent user belongs to (the master's group, or --control-socket in a setgid directory of that group, "
    'chmod 2750), and make the parent directory traversable by that group (g+x); the default directory is created '
    '0700'
)


# Errors


class ControlSocketError(Exception):
    """Any failure talking to a control socket; `path` is the socket path involved, when there is one."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
        self.candidate = None  # the locate.Candidate it happened at, when a candidate was being verified


class SocketMissing(ControlSocketError):
    """No socket file at the path, or a stale one nobody listens on."""


class SocketPermissionDenied(ControlSocketError):
    """The Agent's user may not connect to the socket (file mode or an untraversable directory)."""


class SocketTimeout(ControlSocketError):
    """The exchange did not finish before its deadline."""


class ProtocolError(ControlSocketError):
    """The peer broke the protocol: bad frame, oversize frame, invalid JSON, wrong reply id or early EOF."""


class CommandFailed(ControlSocketError):
    """The server answered a command with `status: error`; the connection stays usable."""


# Framing


def encode_frame(message: Any, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """One frame: 4-byte big-endian length, then the UTF-8 JSON of `message`. ValueError beyond the cap."""
    payload = json.dumps(message, separators=(',', ':')).encode('utf-8')
    if len(payload) > max_frame_bytes:
        raise ValueError(f'frame of {len(payload)} bytes exceeds the {max_frame_bytes}-byte cap')
    return _LENGTH.pack(len(payload)) + payload


def _check_length(length: int, max_frame_bytes: int, path: str) -> None:
    if length > max_frame_bytes:
        raise _protocol_error(
            path, f'sent a frame announcing {length} bytes, more than the {max_frame_bytes}-byte cap (max_frame_bytes)'
        )


def _decode_payload(payload: bytes, path: str) -> Any:
    try:
        return json.loads(payload.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _protocol_error(path, 'sent a frame that is not UTF-8 JSON (%s)' % type(exc).__name__) from exc
    except RecursionError as exc:
        # Python's decoder recurses once per level of nesting: a reply nested thousands deep would exhaust the stack.
        raise _protocol_error(path, "sent JSON nested deeper than any reply of Gunicorn's") from exc


def _protocol_error(path: str, detail: str) -> ProtocolError:
    # Gunicorn itself always speaks the protocol, so the likely cause is another program at a default path.
    return ProtocolError(
        f'control socket {path} {detail}: is another program listening at this path, or is it not a Gunicorn '
        '25.1+ control socket?',
        path,
    )


# The client


class Deadline:
    """One point in time (CLOCK_MONOTONIC) shared by every step of an exchange: connect, each send, each recv."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return self._end - self._clock()


def check_command(command: str) -> None:
    """ValueError unless `command` is one of the read-only commands; a monitor must never change the server."""
    if command not in ALLOWED_COMMANDS:
        raise ValueError(
            f'refusing to send {command!r} to a control socket: only {sorted(ALLOWED_COMMANDS)} are allowed'
        )


class ControlSocketClient:
    """One connection to one control socket, used for every command of a check run, within one deadline.

    The deadline starts when the client is created (or is passed in, to share it across several sockets). The
    connection opens lazily on the first query. Use it as a context manager so the socket is always closed, and
    close it as soon as the queries are done: a Gunicorn master running on Python 3.12+ cannot stop its control
    thread while a client is connected, so each fork it makes meanwhile waits 2 s (seen with 27.0.1).
    `wait_for_socket=True` keeps looking for a missing or refusing socket until the deadline, for a path known to
    have worked: the master leaves no socket for a moment around each fork. Otherwise a first connect fails at once.
    """

    def __init__(
        self,
        path: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        deadline: Deadline | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        wait_for_socket: bool = False,
        check_peer: Callable[[socket.socket], None] | None = None,
        opener: Callable[[], int] | None = None,
    ):
        self.path = path
        # For a path the check found rather than was given: returns an O_PATH descriptor of the socket file, walked
        # without following links (locate.py), and the connection goes through that descriptor, never the path.
        self.opener = opener
        # Called on every new connection before anything is sent: raises ControlSocketError to refuse the peer.
        self.check_peer = check_peer
        self.wait_for_socket = wait_for_socket
        self.deadline = deadline or Deadline(timeout)
        self.max_frame_bytes = max_frame_bytes
        self.connects = 0
        self._sock: socket.socket | None = None
        self._next_id = 1
        # What the exchange was doing when it failed, for the error message.
        self._phase = 'connecting'
        # Bytes received and not consumed yet: a recv() may bring the start of the next pipelined reply.
        self._buffer = bytearray()
        # Replies still due on this connection, and whether it is blocking under _QUICK_WAIT_SECONDS.
        self._owed = 0
        self._quick = False

    def __enter__(self) -> ControlSocketClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()
        self._owed = 0

    # The exchange

    def query(self, command: str) -> Any:
        """Send one allow-listed command and return the reply's `data`."""
        (reply,) = self.query_many((command,))
        if isinstance(reply, CommandFailed):
            raise reply
        return reply

    def query_many(self, commands: Sequence[str]) -> Iterator[Any]:
        """Send allow-listed commands in one write and yield each reply's `data` in order.

        Gunicorn reads the frames of a connection one after another, so pipelining saves a round trip per command.
        A `status: error` reply is yielded as its CommandFailed instead of raised: the other replies still come.
        Every other failure raises, mapped as for query(). Each reply is read only when the caller asks for the
        next one, so a caller can check the first before anything else is read; finish or drop the iterator before
        the next query on this client. Every command is checked before anything is sent.
        """
        for command in commands:
            check_command(command)
        return self._exchange(list(commands))

    def _exchange(self, pending: list[str]) -> Iterator[Any]:
        drops: list[_Dropped] = []
        if self._owed:
            # An abandoned iterator left replies on this connection: they would be read as answers to these.
            self.close()
        unsent = True
        expected_id = 0
        while pending:
            command = pending[0]
            try:
                try:
                    if self._sock is None:
                        self._connect(wait_for_socket=self.wait_for_socket or bool(drops))
                        unsent = True
                    if unsent:
                        expected_id = self._next_id
                        self._next_id += len(pending)
                        self._send_requests(expected_id, pending)
                        unsent = False
                    reply = self._read_frame()
                except _Dropped as exc:
                    # The master stops and restarts its control server around every fork (gunicorn/ctl/server.py
                    # _stop_for_fork), closing open connections; a reload forks once per worker in a row. Asking
                    # again until the deadline makes that invisible, and is safe: every allowed command is read-only.
                    # Only the commands not answered yet are asked again.
                    self.close()
                    drops.append(exc)
                    if self.deadline.remaining() <= _RECONNECT_INTERVAL_SECONDS:
                        self._give_up(command, drops)
                    time.sleep(_RECONNECT_INTERVAL_SECONDS)
                    continue
                except _DeadlinePassed as exc:
                    if drops:
                        self._give_up(command, drops)
                    raise TimeoutError(str(exc)) from exc
                self._owed -= 1
                data = self._unwrap(reply, expected_id, command)
            except CommandFailed as exc:
                data = exc
            except BaseException as exc:
                mapped = self._boundary(exc, command)
                if mapped is exc:
                    raise
                raise mapped from exc
            expected_id += 1
            del pending[0]
            drops.clear()
            yield data

    def _give_up(self, command: str, drops: list[_Dropped]) -> NoReturn:
        """Out of time after lost connections: report why the last attempt failed."""
        if not drops[-1].silent:
            raise _protocol_error(
                self.path,
                f'closed the connection {len(drops)} times before answering {command!r} ({drops[-1]}); '
                'a master forking workers for the whole deadline does this too',
            ) from drops[-1]
        raise TimeoutError(str(drops[-1])) from drops[-1]

    def _connect(self, wait_for_socket: bool) -> None:
        while True:
            # Non-blocking for connect(2): a Unix socket whose listen backlog is full then fails at once with EAGAIN
            # instead of waiting; a Unix connect never returns EINPROGRESS, so there is nothing to wait for.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            try:
                self._phase = 'connecting'
                remaining = self._remaining()
                if self.opener is None:
                    _connect_unix(sock, self.path)
                else:
                    _connect_through(sock, self.opener())
                self._quick = remaining / 2 > _QUICK_WAIT_SECONDS + _TIMER_SLACK_SECONDS
                if self._quick:
                    # Python's socket timeouts cost a poll(2) before every recv() and an ioctl(2) for every new
                    # timeout. A healthy master answers within milliseconds, so the first wait is a plain blocking
                    # recv() bounded by SO_RCVTIMEO; it is short because the kernel ends it only to the next timer
                    # tick or later, too coarse for the deadline itself.
                    sock.setblocking(True)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _QUICK_WAIT_TIMEVAL)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                # Right after the server dropped us the socket is being re-created: look again until the deadline.
                # A first connect reports a missing socket at once unless asked to wait.
                if not wait_for_socket or self.deadline.remaining() <= _RECONNECT_INTERVAL_SECONDS:
                    raise
                time.sleep(_RECONNECT_INTERVAL_SECONDS)
                continue
            except BaseException:
                sock.close()
                raise
            if self.check_peer is not None:
                try:
                    self.check_peer(sock)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
            self.connects += 1
            return

    def _send_requests(self, first_id: int, commands: list[str]) -> None:
        assert self._sock is not None
        self._phase = 'sending'
        frames = b''.join(_request(request_id, command) for request_id, command in enumerate(commands, first_id))
        try:
            # A few hundred bytes into an empty socket buffer never wait in practice; when they would, the rest
            # goes out under the deadline.
            try:
                sent = self._sock.send(frames, _NO_WAIT)
            except BlockingIOError:
                sent = 0
            if sent < len(frames):
                self._send_rest(frames[sent:])
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _Dropped(str(exc)) from exc
        self._owed = len(commands)

    def _send_rest(self, data: bytes) -> None:
        assert self._sock is not None
        self._quick = False
        self._sock.settimeout(self._remaining())
        # Since Python 3.5 the timeout bounds the whole sendall(), not each chunk.
        self._sock.sendall(data, _NO_SIGNAL)

    def _read_frame(self) -> Any:
        """The next reply, from what an earlier recv() already brought or from as few recv() calls as possible."""
        self._phase = 'waiting for the reply to'
        buffer = self._buffer
        while len(buffer) < _LENGTH.size:
            self._recv_into_buffer(_LENGTH.size)
        (length,) = _LENGTH.unpack_from(buffer)
        # Checked before reading the body so a bogus prefix cannot make us allocate or wait for gigabytes.
        _check_length(length, self.max_frame_bytes, self.path)
        end = _LENGTH.size + length
        while len(buffer) < end:
            self._recv_into_buffer(end)
        payload = buffer[_LENGTH.size : end]
        del buffer[:end]
        return _decode_payload(payload, self.path)

    def _recv_into_buffer(self, size: int) -> None:
        assert self._sock is not None
        sock = self._sock
        buffer = self._buffer
        first_byte = not buffer
        remaining = self._remaining()
        # Gunicorn 27.0.1 can leak a control connection accepted just before a fork into the master and the new
        # worker (seen with `ss -xp`): nobody answers it and nobody closes it. A healthy master answers in
        # milliseconds, so after half the remaining time without the first byte of a reply, ask again on a fresh
        # connection.
        wait = remaining / 2 if first_byte and remaining > 2 * _MIN_ATTEMPT_SECONDS else remaining
        chunk = None
        try:
            if self._quick and wait > _QUICK_WAIT_SECONDS + _TIMER_SLACK_SECONDS:
                try:
                    # Large reads: the replies to pipelined requests often come in one.
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    # A slow answer: precise timeouts for the rest of this connection, on the same budget.
                    spent = remaining - self.deadline.remaining()
                    remaining -= spent
                    wait -= spent
            if chunk is None:
                if wait <= 0:
                    raise TimeoutError('no answer in time')
                # Python's timeout mode makes the socket non-blocking: no quick blocking wait on it any more.
                self._quick = False
                sock.settimeout(wait)
                chunk = sock.recv(65536)
        except ConnectionResetError as exc:
            if first_byte:
                raise _Dropped(str(exc)) from exc
            raise
        except TimeoutError as exc:
            if wait < remaining:
                raise _Dropped(f'no answer within {wait:.2f}s', silent=True) from exc
            raise
        if not chunk:
            if first_byte:
                raise _Dropped('connection closed before the reply')
            raise _protocol_error(self.path, f'closed the connection mid-frame ({len(buffer)} of {size} bytes)')
        buffer += chunk

    def _remaining(self) -> float:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise _DeadlinePassed('deadline passed')
        return remaining

    def _unwrap(self, reply: Any, request_id: int, command: str) -> Any:
        if not isinstance(reply, dict):
            raise _protocol_error(self.path, f'answered {command!r} with a {type(reply).__name__}, not a JSON object')
        reply_id = reply.get('id')
        if not isinstance(reply_id, int) or isinstance(reply_id, bool) or reply_id != request_id:
            # Replies are matched by position on a shared connection: a wrong id means the stream is out of step.
            raise _protocol_error(self.path, f'answered request id {request_id} with id {reply_id!r}')
        status = reply.get('status')
        if status == 'ok':
            return reply.get('data')
        if status == 'error':
            raise CommandFailed(
                f'Gunicorn at {self.path} refused {command!r}: {reply.get("error")} (is this Gunicorn version '
                'older than the command?)',
                self.path,
            )
        raise _protocol_error(self.path, f'answered {command!r} with status {status!r}')

    def _boundary(self, exc: BaseException, command: str) -> BaseException:
        """The one place where OSError, JSON and struct errors become ControlSocketError: what to raise for `exc`.

        Every failure but an error reply closes the connection, so no socket leaks and no stream is left out of
        step. An except clause rather than a context manager: it costs nothing on the path that does not fail.
        """
        self.close()
        if isinstance(exc, (OSError, ValueError, struct.error)):
            return _map_error(exc, self.path, f'{self._phase} {command!r}', self.deadline.seconds)
        return exc


class _DeadlinePassed(Exception):
    """No time left to start the next step (internal: becomes SocketTimeout, or the last drop's ProtocolError)."""


class _Dropped(Exception):
    """The connection is lost between frames: closed, reset, or silent (internal: triggers a reconnect)."""

    def __init__(self, reason: str, silent: bool = False):
        super().__init__(reason)
        self.silent = silent


def _request(request_id: int, command: str) -> bytes:
    """encode_frame() of a request, without the JSON encoder: commands are allow-listed literals needing no escape."""
    payload = b'{"id":%d,"command":"%s","args":[]}' % (request_id, command.encode())
    return _LENGTH.pack(len(payload)) + payload


# MSG_NOSIGNAL: a peer that closed makes send() fail with EPIPE instead of raising SIGPIPE in the Agent, whatever its
# signal handling. MSG_DONTWAIT: the socket is blocking, this one send() is not.
_NO_SIGNAL = getattr(socket, 'MSG_NOSIGNAL', 0)
_NO_WAIT = _NO_SIGNAL | socket.MSG_DONTWAIT


def _connect_through(sock: socket.socket, fd: int) -> None:
    # /proc/self/fd/N names the very file the descriptor holds: no path is resolved again between check and connect.
    try:
        sock.connect(SELF_FD % fd)
    finally:
        os.close(fd)


def _connect_unix(sock: socket.socket, path: str) -> None:
    if len(os.fsencode(path)) <= _SUN_PATH_MAX or not hasattr(os, 'O_PATH'):
        sock.connect(path)
        return
    # Paths under a container's host mount (/host/run/user/...) can pass the sun_path limit; connecting through
    # /proc/self/fd/N of the open parent directory resolves the same file with a short name.
    directory, name = os.path.split(path)
    dir_fd = os.open(directory or '.', os.O_PATH | os.O_DIRECTORY)
    try:
        sock.connect(f'/proc/self/fd/{dir_fd}/{name}')
    finally:
        os.close(dir_fd)


def _map_error(exc: Exception, path: str, doing: str, timeout: float) -> ControlSocketError:
    if isinstance(exc, TimeoutError):  # socket.timeout is an alias of TimeoutError since Python 3.10
        return SocketTimeout(
            f'control socket {path} did not answer within {timeout:.2f}s ({doing}): the master may be blocked or '
            'stopped; raise the timeout if it is only slow',
            path,
        )
    if isinstance(exc, BlockingIOError):
        # A non-blocking connect(2) to a Unix socket whose listen backlog is full fails with EAGAIN at once.
        return SocketTimeout(
            f'control socket {path} is not accepting connections (listen backlog full, {doing}): the master '
            'is blocked or flooded with control clients',
            path,
        )
    if isinstance(exc, FileNotFoundError):
        return SocketMissing(missing_message(path), path)
    if isinstance(exc, ConnectionRefusedError):
        return SocketMissing(
            f'nothing listens on the socket {path}: a Gunicorn that exited left it, or the master is between two forks',
            path,
        )
    if isinstance(exc, PermissionError):  # EACCES and EPERM
        return SocketPermissionDenied(permission_denied_message(path, exc), path)
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return _protocol_error(path, f'reset the connection while {doing} ({exc})')
    if isinstance(exc, OSError):
        return ControlSocketError(f'control socket {path} failed while {doing}: {exc}', path)
    return _protocol_error(path, f'sent a malformed reply while {doing} ({exc})')


def missing_message(path: str) -> str:
    return (
        f'no control socket at {path}: nothing is bound there (Gunicorn before 25.1, --no-control-socket, or another '
        'path given by --control-socket or control_socket in its config)'
    )


def _describe_mode(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f'{path}: not stat-able ({exc.strerror or exc})'
    return f'{path}: owner uid {st.st_uid} gid {st.st_gid} mode {stat.S_IMODE(st.st_mode):04o}'


def permission_denied_message(path: str, exc: BaseException, doing: str = 'connecting to') -> str:
    """An actionable message for EACCES/EPERM on `path`: who owns the socket and its directory, and the fix."""
    # connect(2) on a Unix socket needs write permission on the socket file and search permission on every
    # directory above it (unix(7)), so both are shown.
    parent = os.path.dirname(path) or '.'
    reason = getattr(exc, 'strerror', None) or exc
    return (
        f'permission denied {doing} control socket {path} ({reason}); socket {_describe_mode(path)}; '
        f'parent {_describe_mode(parent)}; the Agent runs as uid {os.getuid()} gid {os.getgid()} groups '
        f'{sorted(os.getgroups())}; {_PERMISSION_FIX}'
    )
