"""A read-only client for Gunicorn's control socket (Gunicorn 25.1+, gunicorn/ctl/).

Protocol: a Unix stream socket; every message is one frame, a 4-byte big-endian payload length followed by that
many bytes of UTF-8 JSON. A request is `{"id": N, "command": "show stats", "args": []}`; the reply repeats the id
and is either `{"id": N, "status": "ok", "data": {...}}` or `{"id": N, "status": "error", "error": "..."}`.
Several requests may share one connection. The socket has no authentication besides its file mode, and the same
protocol carries commands that change the server (`worker kill`, `reload`, `shutdown`), so this client refuses to
send anything but a fixed list of `show` commands.

Layout: framing (`encode_frame`, `decode_frame`), the client with its single deadline and its single error boundary
(`ControlSocketClient`), where to look for the socket (`candidate_paths`), which socket belongs to which master
(`verify_master`, `connect_verified`), and pure parsers from reply data to frozen dataclasses (`parse_*`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

# Gunicorn accepts frames up to 16 MiB; its replies are a few KiB even with hundreds of workers, so a smaller cap
# bounds what a confused or hostile peer can make the Agent allocate.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 1.0

ALLOWED_COMMANDS = frozenset({'show stats', 'show workers', 'show all', 'show config', 'show listeners'})

SOCKET_NAME = 'gunicorn.ctl'

_LENGTH = struct.Struct('>I')
# sun_path is 108 bytes including the terminating NUL (unix(7)); longer paths are reached through a directory fd.
_SUN_PATH_MAX = 107
# After the server dropped a connection, how often to ask again while the master re-creates its socket.
_RECONNECT_INTERVAL_SECONDS = 0.01
# Below this much time left, a silent connection is waited on to the deadline instead of being replaced.
_MIN_ATTEMPT_SECONDS = 0.05

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


class WrongMaster(ControlSocketError):
    """The socket answered for another master than the one we look at (instances steal the default path)."""

    def __init__(
        self, message: str, path: str | None = None, expected_pid: int | None = None, actual_pid: int | None = None
    ):
        super().__init__(message, path)
        self.expected_pid = expected_pid
        self.actual_pid = actual_pid


# Framing


def encode_frame(message: Any, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """One frame: 4-byte big-endian length, then the UTF-8 JSON of `message`. ValueError beyond the cap."""
    payload = json.dumps(message, separators=(',', ':')).encode('utf-8')
    if len(payload) > max_frame_bytes:
        raise ValueError(f'frame of {len(payload)} bytes exceeds the {max_frame_bytes}-byte cap')
    return _LENGTH.pack(len(payload)) + payload


def decode_frame(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Any:
    """Decode exactly one whole frame; anything short, long, oversize or not UTF-8 JSON is a ProtocolError."""
    if len(data) < _LENGTH.size:
        raise ProtocolError(f'frame of {len(data)} bytes is shorter than its 4-byte length prefix')
    (length,) = _LENGTH.unpack_from(data)
    _check_length(length, max_frame_bytes)
    if len(data) != _LENGTH.size + length:
        raise ProtocolError(f'frame announces {length} payload bytes but carries {len(data) - _LENGTH.size}')
    return _decode_payload(data[_LENGTH.size :])


def _check_length(length: int, max_frame_bytes: int, path: str | None = None) -> None:
    if length > max_frame_bytes:
        detail = f'frame announcing {length} bytes, more than the {max_frame_bytes}-byte cap (max_frame_bytes)'
        raise _protocol_error(path, f'sent a {detail}') if path else ProtocolError(detail)


def _decode_payload(payload: bytes, path: str | None = None) -> Any:
    try:
        return json.loads(payload.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f'frame payload that is not UTF-8 JSON ({exc})'
        raise (_protocol_error(path, f'sent a {detail}') if path else ProtocolError(detail)) from exc


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
    ):
        self.path = path
        self.wait_for_socket = wait_for_socket
        self.deadline = deadline or Deadline(timeout)
        self.max_frame_bytes = max_frame_bytes
        self.connects = 0
        self._sock: socket.socket | None = None
        self._next_id = 1
        # What the exchange was doing when it failed, for the error message.
        self._phase = 'connecting'

    def __enter__(self) -> ControlSocketClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # Typed commands

    def show_stats(self) -> Stats:
        return parse_stats(self.query('show stats'))

    def show_workers(self) -> tuple[WorkerHeartbeat, ...]:
        return parse_workers(self.query('show workers'))

    def show_all(self) -> Processes:
        return parse_all(self.query('show all'))

    def show_config(self) -> Config:
        return parse_config(self.query('show config'))

    def show_listeners(self) -> tuple[Listener, ...]:
        return parse_listeners(self.query('show listeners'))

    # The exchange

    def query(self, command: str) -> Any:
        """Send one allow-listed command and return the reply's `data`."""
        check_command(command)
        drops: list[_Dropped] = []
        while True:
            with self._boundary(command):
                try:
                    if self._sock is None:
                        self._connect(wait_for_socket=self.wait_for_socket or bool(drops))
                    request_id = self._next_id
                    self._next_id += 1
                    self._send(encode_frame({'id': request_id, 'command': command, 'args': []}, self.max_frame_bytes))
                    reply = self._receive()
                except _Dropped as exc:
                    # The master stops and restarts its control server around every fork (gunicorn/ctl/server.py
                    # _stop_for_fork), closing open connections; a reload forks once per worker in a row. Asking
                    # again until the deadline makes that invisible, and is safe: every allowed command is read-only.
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
                return self._unwrap(reply, request_id, command)

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
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._phase = 'connecting'
                sock.settimeout(self._remaining())
                _connect_unix(sock, self.path)
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
            self._sock = sock
            self.connects += 1
            return

    def _send(self, frame: bytes) -> None:
        assert self._sock is not None
        self._phase = 'sending'
        self._sock.settimeout(self._remaining())
        try:
            # Since Python 3.5 the timeout bounds the whole sendall(), not each chunk.
            self._sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _Dropped(str(exc)) from exc

    def _receive(self) -> Any:
        header = self._recv_exactly(_LENGTH.size, at_frame_start=True)
        (length,) = _LENGTH.unpack(header)
        # Checked before reading the body so a bogus prefix cannot make us allocate or wait for gigabytes.
        _check_length(length, self.max_frame_bytes, self.path)
        return _decode_payload(self._recv_exactly(length, at_frame_start=False), self.path)

    def _recv_exactly(self, size: int, at_frame_start: bool) -> bytes:
        assert self._sock is not None
        self._phase = 'waiting for the reply to'
        data = bytearray()
        while len(data) < size:
            remaining = self._remaining()
            # Gunicorn 27.0.1 can leak a control connection accepted just before a fork into the master and the new
            # worker (seen with `ss -xp`): nobody answers it and nobody closes it. A healthy master answers in
            # milliseconds, so after half the remaining time without a first byte, ask again on a fresh connection.
            first_byte = at_frame_start and not data
            wait = remaining / 2 if first_byte and remaining > 2 * _MIN_ATTEMPT_SECONDS else remaining
            self._sock.settimeout(wait)
            try:
                chunk = self._sock.recv(min(size - len(data), 65536))
            except ConnectionResetError as exc:
                if first_byte:
                    raise _Dropped(str(exc)) from exc
                raise
            except TimeoutError as exc:
                if wait < remaining:
                    raise _Dropped(f'no answer within {wait:.2f}s', silent=True) from exc
                raise
            if not chunk:
                if at_frame_start and not data:
                    raise _Dropped('connection closed before the reply')
                raise _protocol_error(self.path, f'closed the connection mid-frame ({len(data)} of {size} bytes)')
            data += chunk
        return bytes(data)

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

    @contextlib.contextmanager
    def _boundary(self, command: str) -> Iterator[None]:
        """The one place where OSError, JSON and struct errors become ControlSocketError; never leaks a socket."""
        try:
            yield
        except CommandFailed:
            raise
        except ControlSocketError:
            self.close()
            raise
        except (OSError, ValueError, struct.error) as exc:
            self.close()
            raise _map_error(exc, self.path, f'{self._phase} {command!r}', self.deadline.seconds) from exc
        except BaseException:
            self.close()
            raise


class _DeadlinePassed(Exception):
    """No time left to start the next step (internal: becomes SocketTimeout, or the last drop's ProtocolError)."""


class _Dropped(Exception):
    """The connection is lost between frames: closed, reset, or silent (internal: triggers a reconnect)."""

    def __init__(self, reason: str, silent: bool = False):
        super().__init__(reason)
        self.silent = silent


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
        return SocketMissing(
            f'no control socket at {path}: Gunicorn is older than 25.1, runs with --no-control-socket, or uses another '
            'path (--control-socket / control_socket in its config); configure that path',
            path,
        )
    if isinstance(exc, ConnectionRefusedError):
        return SocketMissing(
            f'stale control socket {path}: the file exists but nothing listens on it (a Gunicorn that exited, or a '
            'master between forks); check which Gunicorn should own it or configure its real path',
            path,
        )
    if isinstance(exc, PermissionError):  # EACCES and EPERM
        return SocketPermissionDenied(permission_denied_message(path, exc), path)
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return _protocol_error(path, f'reset the connection while {doing} ({exc})')
    if isinstance(exc, OSError):
        return ControlSocketError(f'control socket {path} failed while {doing}: {exc}', path)
    return _protocol_error(path, f'sent a malformed reply while {doing} ({exc})')


def _describe_mode(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f'{path}: not stat-able ({exc.strerror or exc})'
    return f'{path}: owner uid {st.st_uid} gid {st.st_gid} mode {stat.S_IMODE(st.st_mode):04o}'


def permission_denied_message(path: str, exc: BaseException) -> str:
    """An actionable message for EACCES/EPERM on `path`: who owns the socket and its directory, and the fix."""
    # connect(2) on a Unix socket needs write permission on the socket file and search permission on every
    # directory above it (unix(7)), so both are shown.
    parent = os.path.dirname(path) or '.'
    reason = getattr(exc, 'strerror', None) or exc
    return (
        f'permission denied connecting to control socket {path} ({reason}); socket {_describe_mode(path)}; '
        f'parent {_describe_mode(parent)}; the Agent runs as uid {os.getuid()} gid {os.getgid()} groups '
        f'{sorted(os.getgroups())}; {_PERMISSION_FIX}'
    )


# Where the socket is


def home_directory(uid: int) -> str | None:
    """The passwd home of `uid`, what Gunicorn's `~` resolves to unless HOME was changed; None without an entry."""
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None


def explicit_socket_path(cmdline: Sequence[str]) -> str | None:
    """The `--control-socket PATH` / `--control-socket=PATH` of a raw command line (visible without setproctitle)."""
    found = None
    args = list(cmdline)
    for i, arg in enumerate(args):
        # argparse lets a later occurrence win, so keep scanning.
        if arg == '--control-socket' and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith('--control-socket='):
            found = arg.split('=', 1)[1]
    return found or None


def candidate_paths(
    uid: int,
    cmdline: Sequence[str] = (),
    cwd: str | None = None,
    *,
    root: str = '',
    home_of: Callable[[int], str | None] = home_directory,
) -> list[str]:
    """Where a master running as `uid` may have put its control socket, most specific first, without duplicates.

    1. the explicit `--control-socket` of its command line (relative paths are joined to its cwd, as the arbiter
       does); Gunicorn gives the command line precedence over config files, so when present it is the real path;
    2. `/run/user/<uid>/gunicorn.ctl`: `$XDG_RUNTIME_DIR` as systemd-logind sets it (25.1.1+ default);
    3. `<home>/.gunicorn/gunicorn.ctl`: the fallback without XDG_RUNTIME_DIR (25.1.1+);
    4. `<cwd>/gunicorn.ctl`: the 25.1.0 default (cwd comes from /proc/PID/cwd, readable only with privileges).
    Paths are absolute in the master's filesystem and prefixed with `root` (e.g. '/host' when the host's root is
    mounted there). The result is empty when the command line disables the socket (`--no-control-socket`).
    """
    if '--no-control-socket' in cmdline:
        return []
    paths: list[str] = []
    explicit = explicit_socket_path(cmdline)
    if explicit is not None:
        if os.path.isabs(explicit):
            paths.append(explicit)
        elif cwd:
            paths.append(os.path.join(cwd, explicit))
    paths.append(f'/run/user/{uid}/{SOCKET_NAME}')
    home = home_of(uid)
    if home:
        paths.append(os.path.join(home, '.gunicorn', SOCKET_NAME))
    if cwd:
        paths.append(os.path.join(cwd, SOCKET_NAME))
    prefix = root.rstrip('/')
    unique: list[str] = []
    for path in paths:
        full = prefix + os.path.normpath(path)
        if full not in unique:
            unique.append(full)
    return unique


# Which master answers


def verify_master(client: ControlSocketClient, expected_pid: int) -> Stats:
    """`show stats` through `client`, accepted only if it comes from `expected_pid`; WrongMaster otherwise.

    The pid is the one in the master's own pid namespace (the last NSpid of /proc/PID/status when the Agent runs
    in another namespace).
    """
    stats = client.show_stats()
    if stats.pid != expected_pid:
        client.close()
        raise WrongMaster(
            f'control socket {client.path} belongs to the Gunicorn master with pid {stats.pid}, not {expected_pid}: '
            'several instances share the default path; give each its own --control-socket and configure it',
            client.path,
            expected_pid=expected_pid,
            actual_pid=stats.pid,
        )
    return stats


# When no candidate works, the error to report is the one the user can act on; the others are listed with it.
_PRECEDENCE = (SocketPermissionDenied, SocketTimeout, ProtocolError, CommandFailed, WrongMaster, ControlSocketError)


def connect_verified(
    candidates: Iterable[str],
    expected_pid: int,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    deadline: Deadline | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[ControlSocketClient, Stats]:
    """The first candidate socket whose `show stats` names `expected_pid`, still connected, and those stats.

    All candidates share one deadline, which the returned client keeps for the rest of the run; each candidate may
    use only its share of what is left, so one silent socket (another master, stopped) cannot starve the next. If
    none works, raise the most actionable error (permission > timeout > protocol > wrong master > missing) with
    every attempt in its message.
    """
    deadline = deadline or Deadline(timeout)
    paths = list(candidates)
    failures: list[ControlSocketError] = []
    for index, path in enumerate(paths):
        share = Deadline(max(deadline.remaining(), 0.0) / (len(paths) - index))
        client = ControlSocketClient(path, deadline=share, max_frame_bytes=max_frame_bytes)
        try:
            stats = verify_master(client, expected_pid)
        except ControlSocketError as exc:
            client.close()
            failures.append(exc)
            continue
        client.deadline = deadline
        return client, stats
    if not failures:
        raise SocketMissing(f'no candidate control socket path for master {expected_pid} (control socket disabled?)')
    best = next(exc for kind in _PRECEDENCE for exc in failures if isinstance(exc, kind))
    if len(failures) == 1:
        raise best
    summary = '; '.join(f'{type(exc).__name__}: {exc.path}' for exc in failures)
    combined = type(best)(f'{best} [tried {len(failures)} paths: {summary}]', best.path)
    combined.__dict__.update(best.__dict__)
    raise combined from best


# Typed replies. Fields differ between Gunicorn versions, so the parsers never raise: a missing or wrongly typed
# field becomes None (or an empty tuple) and unknown fields are ignored.


@dataclass(frozen=True)
class Stats:
    """`show stats`. `workers_killed` counts only SIGTERM/SIGKILL sent by the master itself."""

    pid: int | None
    uptime_seconds: float | None
    workers_current: int | None
    workers_target: int | None
    workers_spawned: int | None
    workers_killed: int | None
    reloads: int | None
    dirty_arbiter_pid: int | None


@dataclass(frozen=True)
class WorkerHeartbeat:
    """One web or dirty worker. `age` is the spawn order (1 = oldest), not a duration. Gunicorn's `booted` is
    always false in 27.0.1, so it is not exposed."""

    pid: int
    age: int | None
    last_heartbeat_seconds: float | None
    apps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Processes:
    """`show all`: the only command that lists dirty workers (`show dirty` never does in 27.0.1)."""

    arbiter_pid: int | None
    web_workers: tuple[WorkerHeartbeat, ...]
    dirty_arbiter_pid: int | None
    dirty_workers: tuple[WorkerHeartbeat, ...]


@dataclass(frozen=True)
class Config:
    """`show config`. `worker_class` is a short name (sync, gthread, gevent, tornado, asgi, eventlet) or the dotted
    path of a third-party class; `worker_class_raw` is what the server sent."""

    worker_class: str | None
    worker_class_raw: str | None
    workers: int | None
    threads: int | None
    timeout_seconds: float | None
    graceful_timeout_seconds: float | None
    keepalive_seconds: float | None
    max_requests: int | None
    max_requests_jitter: int | None
    worker_connections: int | None
    bind: tuple[str, ...]
    preload_app: bool | None
    proc_name: str | None
    dirty_workers: int | None
    dirty_apps: tuple[str, ...]
    dirty_timeout_seconds: float | None
    control_socket: str | None


@dataclass(frozen=True)
class Listener:
    """`show listeners`. `address` is str() of the listener: `http://127.0.0.1:8000` or `unix:/path`."""

    address: str | None
    fd: int | None
    type: str | None  # tcp, tcp6, unix or unknown


def _int(value: Any) -> int | None:
    # bool is an int subclass; JSON true is never a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    # Python's json module accepts NaN and Infinity.
    return value if math.isfinite(value) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _strs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def parse_stats(data: Any) -> Stats:
    data = _dict(data)
    return Stats(
        pid=_int(data.get('pid')),
        uptime_seconds=_float(data.get('uptime')),
        workers_current=_int(data.get('workers_current')),
        workers_target=_int(data.get('workers_target')),
        workers_spawned=_int(data.get('workers_spawned')),
        workers_killed=_int(data.get('workers_killed')),
        reloads=_int(data.get('reloads')),
        dirty_arbiter_pid=_int(data.get('dirty_arbiter_pid')),
    )


def _heartbeats(entries: Any) -> tuple[WorkerHeartbeat, ...]:
    workers = []
    for entry in entries if isinstance(entries, list) else ():
        entry = _dict(entry)
        pid = _int(entry.get('pid'))
        if pid is None:  # an entry without a pid cannot be joined to a process
            continue
        workers.append(
            WorkerHeartbeat(
                pid=pid,
                age=_int(entry.get('age')),
                last_heartbeat_seconds=_float(entry.get('last_heartbeat')),
                apps=_strs(entry.get('apps')),
            )
        )
    # Oldest first, as the server sorts them; unknown ages last. sorted() is stable for equal keys.
    return tuple(sorted(workers, key=lambda w: (w.age is None, w.age or 0)))


def parse_workers(data: Any) -> tuple[WorkerHeartbeat, ...]:
    return _heartbeats(_dict(data).get('workers'))


def parse_all(data: Any) -> Processes:
    data = _dict(data)
    return Processes(
        arbiter_pid=_int(_dict(data.get('arbiter')).get('pid')),
        web_workers=_heartbeats(data.get('web_workers')),
        dirty_arbiter_pid=_int(_dict(data.get('dirty_arbiter')).get('pid')),
        dirty_workers=_heartbeats(data.get('dirty_workers')),
    )


_WORKER_MODULES = {
    'gunicorn.workers.sync': 'sync',
    'gunicorn.workers.gthread': 'gthread',
    'gunicorn.workers.ggevent': 'gevent',
    'gunicorn.workers.gtornado': 'tornado',
    'gunicorn.workers.gasgi': 'asgi',
    'gunicorn.workers.geventlet': 'eventlet',
}
_SHORT_NAMES = frozenset(_WORKER_MODULES.values()) | {'gevent_wsgi', 'gevent_pywsgi'}


def worker_class_name(raw: str | None) -> str | None:
    """Short name of a worker class as `show config` sends it (`str()` of the class) or as configured."""
    if not raw:
        return None
    name = raw.strip()
    if name.startswith("<class '") and name.endswith("'>"):
        name = name[len("<class '") : -len("'>")]
    if name.startswith('egg:gunicorn#'):  # the old setuptools entry-point spelling
        name = name[len('egg:gunicorn#') :]
    if name in _SHORT_NAMES:
        return 'gevent' if name.startswith('gevent') else name
    module = name.rpartition('.')[0]
    return _WORKER_MODULES.get(module, name)


def parse_config(data: Any) -> Config:
    data = _dict(data)
    raw_class = _str(data.get('worker_class'))
    return Config(
        worker_class=worker_class_name(raw_class),
        worker_class_raw=raw_class,
        workers=_int(data.get('workers')),
        threads=_int(data.get('threads')),
        timeout_seconds=_float(data.get('timeout')),
        graceful_timeout_seconds=_float(data.get('graceful_timeout')),
        keepalive_seconds=_float(data.get('keepalive')),
        max_requests=_int(data.get('max_requests')),
        max_requests_jitter=_int(data.get('max_requests_jitter')),
        worker_connections=_int(data.get('worker_connections')),
        bind=_strs(data.get('bind')),
        preload_app=_bool(data.get('preload_app')),
        proc_name=_str(data.get('proc_name')),
        dirty_workers=_int(data.get('dirty_workers')),
        dirty_apps=_strs(data.get('dirty_apps')),
        dirty_timeout_seconds=_float(data.get('dirty_timeout')),
        control_socket=_str(data.get('control_socket')),
    )


def parse_listeners(data: Any) -> tuple[Listener, ...]:
    entries = _dict(data).get('listeners')
    return tuple(
        Listener(address=_str(e.get('address')), fd=_int(e.get('fd')), type=_str(e.get('type')))
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict)
    )
