"""Where a master's control socket is, and which master answers on it."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .client import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    CommandFailed,
    ControlSocketClient,
    ControlSocketError,
    Deadline,
    ProtocolError,
    SocketMissing,
    SocketPermissionDenied,
    SocketTimeout,
    WrongMaster,
)
from .replies import Stats, parse_stats

SOCKET_NAME = 'gunicorn.ctl'


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
    return _verify(client, expected_pid, ())[0]


def _verify(client: ControlSocketClient, expected_pid: int, then: Sequence[str]) -> tuple[Stats, Iterator[Any]]:
    """verify_master() with `then` pipelined behind `show stats`; their replies are read only once it passed."""
    replies = client.query_many(('show stats', *then))
    first = next(replies)
    if isinstance(first, CommandFailed):
        raise first
    stats = parse_stats(first)
    if stats.pid != expected_pid:
        client.close()
        raise WrongMaster(
            f'control socket {client.path} belongs to the Gunicorn master with pid {stats.pid}, not {expected_pid}: '
            'several instances share the default path; give each its own --control-socket and configure it',
            client.path,
            expected_pid=expected_pid,
            actual_pid=stats.pid,
        )
    return stats, replies


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
    client, stats, _ = verified_exchange(
        candidates, expected_pid, (), timeout, deadline=deadline, max_frame_bytes=max_frame_bytes
    )
    return client, stats


def verified_exchange(
    candidates: Iterable[str],
    expected_pid: int,
    then: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    deadline: Deadline | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[ControlSocketClient, Stats, Iterator[Any]]:
    """connect_verified() that also sends the commands `then` in the same write as `show stats`: one round trip.

    The third item yields their replies as ControlSocketClient.query_many() does, each read only when asked for;
    none is read unless the stats named `expected_pid`.
    """
    deadline = deadline or Deadline(timeout)
    paths = list(candidates)
    failures: list[ControlSocketError] = []
    for index, path in enumerate(paths):
        share = Deadline(max(deadline.remaining(), 0.0) / (len(paths) - index))
        client = ControlSocketClient(path, deadline=share, max_frame_bytes=max_frame_bytes)
        try:
            stats, replies = _verify(client, expected_pid, then)
        except ControlSocketError as exc:
            client.close()
            failures.append(exc)
            continue
        client.deadline = deadline
        return client, stats, replies
    if not failures:
        raise SocketMissing(f'no candidate control socket path for master {expected_pid} (control socket disabled?)')
    best = next(exc for kind in _PRECEDENCE for exc in failures if isinstance(exc, kind))
    if len(failures) == 1:
        raise best
    summary = '; '.join(f'{type(exc).__name__}: {exc.path}' for exc in failures)
    combined = type(best)(f'{best} [tried {len(failures)} paths: {summary}]', best.path)
    combined.__dict__.update(best.__dict__)
    raise combined from best
