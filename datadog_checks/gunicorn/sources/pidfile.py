"""The master named by Gunicorn's pid file (`--pid FILE`), checked against the process table.

Gunicorn writes the master's pid followed by a newline (gunicorn/pidfile.py `Pidfile.create`, through a temporary
file renamed into place, so a reader never sees half a pid). A new master started by USR2 writes `FILE.2`; once the
old master is gone it is promoted and renames `FILE.2` to `FILE` (arbiter.py `maybe_promote_master`). A master that
is killed leaves its file behind, and the pid in it may later belong to anything: the named process counts only if
it is alive, is a Gunicorn master, and started before the file was written.
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
from dataclasses import dataclass, field

from .cmdline import GunicornCommand, parse_gunicorn
from .procfs import ProcError, ProcessAccessDenied, ProcessGone, ProcFS, Stat
from .redaction import redacted_command
from .titles import Role, parse_title

UPGRADE_SUFFIX = '.2'
# PID_MAX_LIMIT (include/linux/threads.h)
PID_MAX = 4_194_304
# A pid file holds one decimal pid and a newline; anything longer is not a pid file.
MAX_BYTES = 64
# The boot time in /proc/stat has a one-second resolution and moves with wall-clock adjustments: a master may look
# started up to this long after it wrote its file.
START_TOLERANCE_SECONDS = 2.0
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
NAMESPACE_HINT = (
    'if Gunicorn runs in a container whose PID namespace the Agent does not share, the pid in its file means '
    'nothing to the Agent: use proc_name instead'
)


def _kind(mode: int) -> str:
    kinds = {stat_module.S_IFDIR: 'a directory', stat_module.S_IFIFO: 'a FIFO', stat_module.S_IFSOCK: 'a socket'}
    return kinds.get(stat_module.S_IFMT(mode), 'a device')


class PidFileError(Exception):
    """The pid file names no usable master; the message says why, for the service check."""


class PidFileMissing(PidFileError):
    pass


class PidFileUnreadable(PidFileError):
    pass


class PidFileInvalid(PidFileError):
    pass


class StalePidFile(PidFileError):
    """The pid is not running any more, or was reused by another process."""


class NotAMaster(PidFileError):
    """The pid is alive, but it is not a Gunicorn master."""

    def __init__(self, message: str, stat: Stat, what: str):
        super().__init__(message)
        self.stat = stat
        self.what = what  # what the process is instead, for a message about pid reuse


@dataclass(frozen=True)
class PidFileContent:
    pid: int
    mtime: float  # seconds since the epoch


@dataclass(frozen=True)
class PidFileMaster:
    """A master named by a pid file: its stat, its name, and its raw command when it has no title."""

    path: str
    stat: Stat
    name: str | None
    command: GunicornCommand | None


@dataclass
class PidFileResult:
    masters: list[PidFileMaster] = field(default_factory=list)
    problem: PidFileError | None = None  # why `FILE` (and `FILE.2`) named no master, when none was found


def parse_pid_file(data: bytes) -> int:
    """The pid a pid file holds. The error describes the content (its size, whether it is text) and never quotes
    it: a `pid_file` pointing at another file, by mistake or through a symbolic link, must not show that file."""
    text = data.strip()
    if not text.isdigit() or not 0 < int(text) <= PID_MAX:
        kind = 'empty' if not text else '%d bytes that are not a pid' % len(data)
        raise ValueError(kind if text.isascii() or not text else '%d bytes of binary data, not a pid' % len(data))
    return int(text)


def read_pid_file(path: str) -> PidFileContent:
    """The pid and modification time of a pid file, through one open file (the two always match)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            # A FIFO would block a reader (hence O_NONBLOCK) and a device would read whatever it gives: only a file
            # Gunicorn can have written is read.
            data = os.read(fd, MAX_BYTES + 1) if stat_module.S_ISREG(st.st_mode) else None
        finally:
            os.close(fd)
    except FileNotFoundError as exc:
        raise PidFileMissing(
            'pid file %s does not exist: is Gunicorn running with `--pid %s`, and is the file visible to the Agent '
            '(mounted into its container)?' % (path, path)
        ) from exc
    except PermissionError as exc:
        raise PidFileUnreadable('pid file %s cannot be read by the Agent user: permission denied' % path) from exc
    except OSError as exc:
        raise PidFileUnreadable('pid file %s cannot be read: %s' % (path, os.strerror(exc.errno or 0))) from exc
    if data is None:
        raise PidFileInvalid('pid file %s is %s, not a file' % (path, _kind(st.st_mode)))
    try:
        if len(data) > MAX_BYTES:
            raise ValueError('more than %d bytes' % MAX_BYTES)
        return PidFileContent(parse_pid_file(data), st.st_mtime)
    except ValueError as exc:
        raise PidFileInvalid('pid file %s does not hold a pid (%s)' % (path, exc)) from exc


@dataclass
class PidFiles:
    """Masters named by `path` and, during a USR2 upgrade, `path.2`; verified once per (pid, file version)."""

    procfs: ProcFS
    path: str
    log: logging.Logger | logging.LoggerAdapter
    expected_name: str | None = None  # proc_name, when the instance sets it too
    _verified: dict[str, tuple[PidFileContent, PidFileMaster]] = field(default_factory=dict)

    def masters(self) -> PidFileResult:
        result = PidFileResult()
        problems = []
        for path in (self.path, self.path + UPGRADE_SUFFIX):
            try:
                result.masters.append(self.master(path))
            except PidFileMissing as exc:
                if path == self.path:
                    problems.append(exc)
            except PidFileError as exc:
                self.log.debug('%s', exc)
                problems.append(exc)
        if not result.masters and problems:
            result.problem = problems[0]
        return result

    def master(self, path: str) -> PidFileMaster:
        content = read_pid_file(path)
        known = self._verified.get(path)
        if known is not None and known[0] == content:
            # The same file as last run: a stat read tells whether its master still runs.
            master = self._recheck(known[1])
            if master is not None:
                self._verified[path] = (content, master)
                return master
        try:
            master = self._inspect(path, content.pid)
        except NotAMaster as exc:
            if self._started_after(path, content, exc.stat):
                raise StalePidFile(
                    'pid file %s is stale: pid %d was reused by %s, started after the file was written'
                    % (path, content.pid, exc.what)
                ) from exc
            raise
        if self._started_after(path, content, master.stat) and not self._writes(path, master):
            raise StalePidFile(
                'pid file %s is stale: pid %d is a Gunicorn master started after the file was written, not the one '
                'that wrote it (a reused pid)' % (path, content.pid)
            )
        self._verified[path] = (content, master)
        return master

    def _recheck(self, known: PidFileMaster) -> PidFileMaster | None:
        try:
            stat = self.procfs.read_stat(known.stat.pid)
            title = parse_title(self.procfs.read_title(known.stat.pid)) if known.command is not None else None
        except ProcError:
            return None
        if stat.key != known.stat.key or stat.state == 'Z':
            return None
        if title is not None:
            # Titles appear once a master has imported the application (`--preload`): from then on it is titled.
            return PidFileMaster(known.path, stat, title.name, None) if title.role is Role.MASTER else None
        return PidFileMaster(known.path, stat, known.name, known.command)

    def _inspect(self, path: str, pid: int) -> PidFileMaster:
        try:
            stat = self.procfs.read_stat(pid)
            title = self.procfs.read_title(pid)
        except ProcessGone as exc:
            raise StalePidFile(
                'pid file %s is stale: pid %d is not running (Gunicorn was stopped without removing it, or %s)'
                % (path, pid, NAMESPACE_HINT)
            ) from exc
        except ProcessAccessDenied as exc:
            raise PidFileUnreadable(
                'pid file %s names pid %d, whose /proc entry the Agent cannot read (hidepid, or permissions)'
                % (path, pid)
            ) from exc
        if stat.state == 'Z':
            raise StalePidFile('pid file %s is stale: pid %d is not running (it has exited)' % (path, pid))
        titled = parse_title(title)
        if titled is not None:
            if titled.role is Role.MASTER:
                return PidFileMaster(path, stat, titled.name, None)
            what = 'a Gunicorn %s of %s' % (titled.role.value, titled.name or 'no name')
            raise NotAMaster('pid file %s names pid %d, %s, not a master' % (path, pid, what), stat, what)
        command, argv = self._command(pid)
        if command is None:
            what = '`%s`' % redacted_command(argv)
            raise NotAMaster(
                'pid file %s names pid %d, which is not Gunicorn but %s (%s)' % (path, pid, what, NAMESPACE_HINT),
                stat,
                what,
            )
        parent, _ = self._command(stat.ppid)
        # The new master of a USR2 upgrade runs its parent's command: only `FILE.2` may name such a process.
        if parent is not None and parent.args == command.args and not path.endswith(UPGRADE_SUFFIX):
            what = 'a Gunicorn worker of master %d' % stat.ppid
            raise NotAMaster('pid file %s names pid %d, %s, not the master' % (path, pid, what), stat, what)
        return PidFileMaster(path, stat, command.proc_name, command)

    def _command(self, pid: int) -> tuple[GunicornCommand | None, list[str]]:
        try:
            argv = self.procfs.read_cmdline(pid)
        except ProcError:
            return None, []
        return parse_gunicorn(argv), argv

    def _started_after(self, path: str, content: PidFileContent, stat: Stat) -> bool:
        """Whether the process started after the file was written: then it cannot be the one that wrote it."""
        try:
            boot = self.procfs.read_boot_time()
        except ProcError as exc:
            self.log.debug('Cannot date pid %d against %s: %s', content.pid, path, exc)
            return False
        return boot + stat.start_ticks / CLOCK_TICKS > content.mtime + START_TOLERANCE_SECONDS

    def _writes(self, path: str, master: PidFileMaster) -> bool:
        """Whether `master` is the one Gunicorn would have let keep an old file.

        Gunicorn does not rewrite a pid file that already holds its own pid (pidfile.py `create`): a container
        restarted with the same pid and a persistent file keeps the old date. Such a master is recognisable by its
        command line naming this file, or by carrying the configured name.
        """
        if master.command is not None and master.command.pid_file:
            return os.path.basename(master.command.pid_file) == os.path.basename(path.removesuffix(UPGRADE_SUFFIX))
        return self.expected_name is not None and master.name in (
            self.expected_name,
            self.expected_name + UPGRADE_SUFFIX,
        )
