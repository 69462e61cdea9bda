"""Where a master's control socket is, and whether that master is what answers there.

Gunicorn puts the socket at `$XDG_RUNTIME_DIR/gunicorn.ctl`, else `$HOME/.gunicorn/gunicorn.ctl`, of the master's own
environment (gunicorn/config.py), or where `--control-socket` says, under any name. Guesses from the master's user
would miss a master whose HOME is not its passwd home (supervisord, sudo without -H, containers), and would take
another application's socket for this master's, so the path comes from what the kernel shows (`candidates`):
1. the `control_socket` option, when set, alone;
2. with access to the master's fds (ptrace-level): the listening unix sockets the master holds and its workers do not
   (/proc/MASTER/net/unix lists its network namespace's listeners, /proc/MASTER/fd names the master's own sockets),
   whatever their name, `gunicorn.ctl` first; and the command line's `--control-socket`. Nothing else: a master that
   holds no such socket has none (Gunicorn before 25.1, disabled in its configuration, a bind that failed), or has
   not bound it yet;
3. without that access: the command line's `--control-socket` (visible while the master has no title), then, as
   guesses not tied to the master, its environment's defaults, the listeners of its namespace named `gunicorn.ctl`
   and the defaults of its user's passwd entry, each only if a socket listens there in its network namespace.

A path the check found, rather than one configured, is reached without following links (beneath.py): a link planted
at a guessed path must not make the Agent connect elsewhere, and through /proc/PID/root it would leave the master's
root.

Nothing found there is believed until verified (`verified_exchange`): the file is a socket owned by the master's user
or root; the kernel's SO_PEERCRED names the master as the process listening; and `show stats` answers with the
master's pid in its own PID namespace. During a USR2 upgrade the new master under it may answer instead: it serves
the same application, and Gunicorn gives it the same path. Each refusal says what was found, for the user and for
`diagnose`, which verifies with this same function.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat as stat_module
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..beneath import LinkRefused, open_beneath
from ..procfs import ProcError, ProcFS, Stat, socket_inodes
from ..redaction import app_name
from ..sockets.proc_net import read_net_unix
from ..sockets.rows import SOCK_STREAM, SocketTableError
from ..titles import parse_title
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
    missing_message,
    permission_denied_message,
)
from .replies import BadReply, Stats, parse_stats

SOCKET_NAME = 'gunicorn.ctl'
# Workers whose sockets are compared with the master's: a listener they hold is one of the app's binds, not its control
# socket (Gunicorn closes the control socket around every fork: gunicorn/ctl/server.py).
_CONFIRMING_WORKERS = 2
_PEERCRED = struct.Struct('3i')  # struct ucred: pid, uid, gid
_KINDS = {
    stat_module.S_IFREG: 'a regular file',
    stat_module.S_IFDIR: 'a directory',
    stat_module.S_IFIFO: 'a FIFO',
    stat_module.S_IFCHR: 'a character device',
    stat_module.S_IFBLK: 'a block device',
}


# What was found instead of the master's socket


class NotASocket(ControlSocketError):
    """The path holds a file that is not a socket: nothing Gunicorn made."""

    def __init__(self, path: str, kind: str):
        super().__init__('%s is %s, not a socket' % (path, kind), path)
        self.kind = kind


class ForeignOwner(ControlSocketError):
    """The socket belongs to neither the master's user nor root: another user made it, so it is not used."""

    def __init__(self, path: str, owner: int, expected: int):
        super().__init__(
            'control socket %s is owned by uid %d, not by the master\'s user (uid %d) or root: not used' % (
                path, owner, expected),
            path,
        )  # fmt: skip
        self.owner = owner
        self.expected = expected


class WrongMaster(ControlSocketError):
    """Another process than the master answers on the socket: another master took the path, or a stranger."""

    def __init__(self, path: str, expected_pid: int, answering_pid: int | None, app: str | None):
        who = 'pid %d%s' % (answering_pid, ' (app %s)' % app if app else '') if answering_pid else 'another process'
        super().__init__('control socket %s is answered by %s, not by master %d' % (path, who, expected_pid), path)
        self.expected_pid = expected_pid
        self.answering_pid = answering_pid  # in the answering process's own PID namespace when not visible here
        self.app = app


class LinkedPath(SocketMissing):
    """A path the check found (not configured) runs through a symbolic link: it is not followed, so it is not the
    master's socket as far as the check is concerned."""

    def __init__(self, path: str, component: str):
        super().__init__('%s is not followed: %s is a symbolic link' % (path, component), path)


class ListenerWithoutFile(SocketMissing):
    """The socket file is gone while a listener bound at that path still lives in the master's namespace.

    Gunicorn's old master deletes the file of the promoted one when it exits after a USR2 upgrade (27.0.1); the master
    binds it again at its next worker fork.
    """


# Who may answer


@dataclass(frozen=True)
class Identity:
    """A master as the socket must prove it: pids (as the Agent sees them and in their own PID namespace) and user.

    `upgrades` are the new masters of a USR2 upgrade under it: Gunicorn gives them the same socket path.
    """

    pid: int
    ns_pid: int
    uid: int
    upgrades: Mapping[int, int] = field(default_factory=dict)  # ns_pid -> pid as the Agent sees it

    def answers(self) -> dict[int, int]:
        """Every pid `show stats` may name (in its own namespace), with the pid the Agent sees it as."""
        return {self.ns_pid: self.pid, **self.upgrades}


def identity(procfs: ProcFS, master: Stat, upgrades: Iterable[Stat] = ()) -> Identity:
    """The master's identity from /proc/PID/status (world-readable); ProcError when it cannot be read."""
    status = procfs.read_status(master.pid)
    seen = {}
    for upgrade in upgrades:
        try:
            seen[procfs.read_status(upgrade.pid).ns_pid] = upgrade.pid
        except ProcError:
            continue  # gone since discovery: it answers for nobody
    return Identity(master.pid, status.ns_pid, status.uid, seen)


# Where to look


@dataclass(frozen=True)
class Candidate:
    path: str  # as the master's mount namespace names it: what Gunicorn bound
    reach: str  # where this process finds that file
    source: str  # why it is looked at, for messages
    # Whether the source ties the path to this master. A listener merely named gunicorn.ctl may be another app's: that
    # it answers for another master says nothing the user must fix.
    own: bool = True
    # Whether a socket is known to listen at this path in the master's network namespace, rather than guessed.
    seen: bool = False
    # Where the master's root starts for this process, for a path walked without following links (beneath.py); None
    # for a configured path, which is followed as the user wrote it.
    beneath: str | None = None


def home_directory(uid: int) -> str | None:
    """The passwd home of `uid`, what Gunicorn's `~` resolves to unless HOME was changed; None without an entry."""
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None


def explicit_socket_path(cmdline: Sequence[str]) -> str | None:
    """The `--control-socket PATH` / `--control-socket=PATH` of a raw command line (visible without setproctitle)."""
    found = None
    for i, arg in enumerate(cmdline):
        # argparse lets a later occurrence win, so keep scanning.
        if arg == '--control-socket' and i + 1 < len(cmdline):
            found = cmdline[i + 1]
        elif arg.startswith('--control-socket='):
            found = arg.split('=', 1)[1]
    return found or None


def default_paths(environment: Mapping[str, str]) -> list[str]:
    """Gunicorn's default socket for an environment: under XDG_RUNTIME_DIR, else under HOME (config.py)."""
    paths = []
    if environment.get('XDG_RUNTIME_DIR'):
        paths.append(os.path.join(environment['XDG_RUNTIME_DIR'], SOCKET_NAME))
    if environment.get('HOME'):
        paths.append(os.path.join(environment['HOME'], '.gunicorn', SOCKET_NAME))
    return paths


def candidates(
    procfs: ProcFS,
    master: Stat,
    uid: int,
    configured: str | None = None,
    home_of: Callable[[int], str | None] = home_directory,
) -> list[Candidate] | None:
    """Where `master`'s socket may be, most certain first, without duplicates; None when its command line disables
    the socket (`--no-control-socket`)."""
    listeners = _listening(procfs, master.pid)
    seen = {path for _, path in listeners or ()}
    reach = _reacher(procfs, master.pid)
    if configured:
        return [Candidate(configured, reach(configured), 'the control_socket option', seen=configured in seen)]
    found: list[tuple[str, str, bool]] = []
    argv = _read(procfs.read_cmdline, master.pid) or []
    if '--no-control-socket' in argv:
        return None
    cwd = _read(procfs.read_cwd, master.pid)  # None without ptrace-level access
    held = _read(lambda pid: socket_inodes(procfs.read_fd_links(pid)), master.pid)
    if held is not None:
        found += [(path, "the master's own listening socket", True) for path in _own_listeners(procfs, master, held)]
    explicit = explicit_socket_path(argv)
    if explicit is not None:
        found.append((_absolute(explicit, cwd), "--control-socket on the master's command line", True))
    if held is None:
        # Without its fds nothing ties a path to the master: these are guesses, used only where something listens,
        # and what answers there is no fault of this master's (`own` False).
        environment = _read(lambda pid: procfs.read_environ(pid, frozenset({'HOME', 'XDG_RUNTIME_DIR'})), master.pid)
        guesses = [(p, "Gunicorn's default in the master's environment") for p in default_paths(environment or {})]
        home = home_of(uid)
        fallback = {'XDG_RUNTIME_DIR': '/run/user/%d' % uid, **({'HOME': home} if home else {})}
        guesses += [(path, "Gunicorn's default for the master's user") for path in default_paths(fallback)]
        guesses += [
            (path, 'a control socket listening in its network namespace')
            for _, path in listeners or ()
            if os.path.basename(path) == SOCKET_NAME
        ]
        found += [(path, source, False) for path, source in guesses if listeners is None or path in seen]
    # A path found several ways keeps its most certain source, and is the master's own if any way says so.
    unique: dict[str, tuple[str, bool]] = {}
    for path, source, own in found:
        path = os.path.normpath(path)
        if os.path.isabs(path):
            first = unique.setdefault(path, (source, own))
            unique[path] = (first[0], first[1] or own)
    located = []
    for path, (source, own) in unique.items():
        where = reach(path)
        located.append(Candidate(path, where, source, own, path in seen, where[: len(where) - len(path)] or '/'))
    return located


def _own_listeners(procfs: ProcFS, master: Stat, held: frozenset[int]) -> list[str]:
    """Paths of the listening unix sockets `master` holds and its workers do not, `gunicorn.ctl` first.

    A listener the workers hold too is one of the app's `--bind unix:` sockets. Before any worker could be read that
    cannot be told, so only a socket named `gunicorn.ctl` is taken then: anything else might be the app's own.
    """
    mine = [(inode, path) for inode, path in _listening(procfs, master.pid) or () if inode in held]
    if not mine:
        return []
    shared: set[int] = set()
    confirmed = 0
    for child in sorted(_read(procfs.read_children, master.pid) or ()):
        inodes = _read(lambda pid: socket_inodes(procfs.read_fd_links(pid)), child)
        if inodes is None:
            continue  # gone, or not readable: says nothing
        shared |= inodes
        confirmed += 1
        if confirmed == _CONFIRMING_WORKERS:
            break
    paths = [path for inode, path in mine if inode not in shared and (confirmed or _named_default(path))]
    return sorted(dict.fromkeys(paths), key=lambda path: not _named_default(path))


def _named_default(path: str) -> bool:
    return os.path.basename(path) == SOCKET_NAME


def _read(read: Callable[[int], Any], pid: int) -> Any:
    try:
        return read(pid)
    except ProcError:
        return None  # gone (the check finds out next run) or needs ptrace-level access: that source says nothing


def _absolute(path: str, cwd: str | None) -> str:
    # The arbiter joins a relative path to its working directory; without that directory the path is unusable.
    return path if os.path.isabs(path) or not cwd else os.path.join(cwd, path)


def _listening(procfs: ProcFS, pid: int) -> list[tuple[int, str]] | None:
    """(inode, path) of the stream listeners bound to a path in `pid`'s network namespace; None if unreadable."""
    try:
        rows = read_net_unix(procfs, pid)
    except (ProcError, SocketTableError):
        return None
    return [(row.inode, row.path) for row in rows if row.listening and row.type == SOCK_STREAM and row.path]


def _reacher(procfs: ProcFS, pid: int) -> Callable[[str], str]:
    """How this process reaches a path as the master names it. Gunicorn names it in the master's mount namespace: the
    same path when the master has this process's root; else through /proc/PID/root when this process may follow it
    (ptrace-level access), else under the host's root as the Agent mounts it (/host for /host/proc). Whether the roots
    are shared is looked at once for all of a master's candidates."""
    shared = procfs.shares_root(pid)
    if shared:
        return lambda path: path
    prefixes = [procfs.host_root, ''] if shared is None else [procfs.path(pid, 'root')]

    def reach(path: str) -> str:
        tried = [prefix + path for prefix in prefixes]
        for where in tried:
            try:
                os.lstat(where)
            except OSError:
                continue
            return where
        return tried[0]

    return reach


# Which master answers


class _Verifier:
    """The checks a candidate's socket must pass, in the order that talks to it least: its file, then the listening
    process the kernel names, then `show stats`."""

    def __init__(self, procfs: ProcFS, candidate: Candidate, who: Identity):
        self.procfs = procfs
        self.candidate = candidate
        self.who = who

    def check_file(self) -> None:
        path = self.candidate.reach
        try:
            st = self._stat()
        except LinkRefused as exc:
            raise LinkedPath(path, exc.component) from exc
        except FileNotFoundError as exc:
            if self._listener_lives():
                raise ListenerWithoutFile(
                    "no file at %s while a socket bound there still listens in the master's network namespace" % path,
                    path,
                ) from exc
            raise SocketMissing(missing_message(path), path) from exc
        except PermissionError as exc:
            raise SocketPermissionDenied(permission_denied_message(path, exc, 'looking at'), path) from exc
        except OSError as exc:
            raise SocketMissing('%s cannot be looked at: %s' % (path, exc.strerror or exc), path) from exc
        self._check_kind(st)

    def open_socket(self) -> int:
        """An O_PATH descriptor of the socket file, walked again for every connection (Gunicorn re-creates the file
        around each fork) and checked again: the client connects through it, never through the path."""
        assert self.candidate.beneath is not None
        fd = open_beneath(self.candidate.beneath, self.candidate.path)
        try:
            self._check_kind(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _stat(self) -> os.stat_result:
        if self.candidate.beneath is None:
            return os.stat(self.candidate.reach)
        fd = open_beneath(self.candidate.beneath, self.candidate.path)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _check_kind(self, st: os.stat_result) -> None:
        path = self.candidate.reach
        if not stat_module.S_ISSOCK(st.st_mode):
            raise NotASocket(path, _KINDS.get(stat_module.S_IFMT(st.st_mode), 'not a socket'))
        if st.st_uid not in (self.who.uid, 0):
            raise ForeignOwner(path, st.st_uid, self.who.uid)

    def check_peer(self, sock: socket.socket) -> None:
        """SO_PEERCRED: the process that called listen(), as the kernel recorded it; pid 0 when it lives in a PID
        namespace this process cannot see, where only `show stats` can tell."""
        pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if uid not in (self.who.uid, 0):
            raise ForeignOwner(self.candidate.reach, uid, self.who.uid)
        if pid and pid not in self.who.answers().values():
            raise WrongMaster(self.candidate.reach, self.who.pid, pid, self._app_of(pid))

    def check_stats(self, data: Any) -> Stats:
        stats = parse_stats(data)
        if stats.pid not in self.who.answers():
            raise WrongMaster(self.candidate.reach, self.who.pid, stats.pid, None)
        return stats

    def _app_of(self, pid: int) -> str | None:
        try:
            title = parse_title(self.procfs.read_title(pid))
        except ProcError:
            return None
        return app_name(title.name) if title is not None else None

    def _listener_lives(self) -> bool:
        # Only where the path is tied to the master: a listener merely seen there may be another application's.
        # Any name: a configured or --control-socket path need not be Gunicorn's default one.
        listening = _listening(self.procfs, self.who.pid) or ()
        return self.candidate.own and any(path == self.candidate.path for _, path in listening)


# When no candidate works, the error to report is the one the user can act on; the others are listed with it.
_PRECEDENCE = (
    WrongMaster,
    ForeignOwner,
    SocketPermissionDenied,
    SocketTimeout,
    ProtocolError,
    CommandFailed,
    NotASocket,
    ListenerWithoutFile,
    ControlSocketError,
)


@dataclass
class Verified:
    client: ControlSocketClient  # connected, for the rest of the run's deadline
    stats: Stats
    replies: Iterator[Any]  # the replies to `then`, read one by one
    candidate: Candidate
    upgrade_pid: int | None  # the USR2 new master that answered, when not the master itself


def verified_exchange(
    procfs: ProcFS,
    paths: Iterable[Candidate],
    who: Identity,
    then: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> Verified:
    """The first candidate that proves to be `who`'s socket, still connected, with `show stats` and the replies to
    the commands `then`, sent in the same write: one round trip. None of those replies is read unless the stats
    named the master.

    All candidates share one deadline, which the returned client keeps; each may use only its share of what is left,
    so one silent socket cannot starve the next. If none works, raise the most telling failure, with every attempt
    in its message (see `failures`).
    """
    deadline = Deadline(timeout)
    paths = list(paths)
    failures: list[ControlSocketError] = []
    for index, candidate in enumerate(paths):
        share = Deadline(max(deadline.remaining(), 0.0) / (len(paths) - index))
        verifier = _Verifier(procfs, candidate, who)
        client = ControlSocketClient(
            candidate.reach,
            deadline=share,
            max_frame_bytes=max_frame_bytes,
            check_peer=verifier.check_peer,
            opener=None if candidate.beneath is None else verifier.open_socket,
        )
        try:
            verifier.check_file()
            replies = client.query_many(('show stats', *then))
            first = next(replies)
            if isinstance(first, CommandFailed):
                raise first
            stats = verifier.check_stats(first)
        except BadReply as exc:
            client.close()
            failures.append(ProtocolError('%s: %s' % (candidate.reach, exc), candidate.reach))
            continue
        except ControlSocketError as exc:
            client.close()
            exc.candidate = candidate
            failures.append(exc)
            continue
        client.deadline = deadline
        answered = who.answers()[stats.pid]
        return Verified(client, stats, replies, candidate, None if answered == who.pid else answered)
    if not failures:
        raise SocketMissing('no candidate control socket path for master %d' % who.pid)
    raise Unverified(failures)


class Unverified(ControlSocketError):
    """No candidate proved to be the master's socket. `failures` has one error per candidate tried.

    `telling` is the one to act on (`_PRECEDENCE`), among those at paths tied to this master: what a socket of
    another app says is no fault of this one. `observed` is the one to describe, preferring a path where a socket is
    known to listen over a guessed one, and of those one tied to this master: diagnose says what is there.
    """

    def __init__(self, failures: list[ControlSocketError]):
        self.failures = failures
        own = [f for f in failures if f.candidate is None or f.candidate.own]
        # Only guesses failed: nothing tied to this master was found, which is not a fault of its own.
        self.telling = _most_telling(own) if own else SocketMissing('no control socket tied to the master was found')
        self.tied = bool(own)
        seen = [f for f in failures if f.candidate is not None and f.candidate.seen]
        self.observed = _most_telling([f for f in seen if f.candidate.own] or own or seen or failures)
        summary = '; '.join('%s: %s' % (type(f).__name__, f.path) for f in failures)
        tried = '' if len(failures) == 1 else ' [tried %d paths: %s]' % (len(failures), summary)
        super().__init__('%s%s' % (self.telling, tried), self.telling.path)


def _most_telling(failures: list[ControlSocketError]) -> ControlSocketError:
    return next(f for kind in _PRECEDENCE for f in failures if isinstance(f, kind))
