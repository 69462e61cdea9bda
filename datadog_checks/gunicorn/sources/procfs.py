"""Readers for the per-process files of proc(5), under a configurable root.

Each reader is named after its kernel file and reads it whole in one call (proc files change between reads and
report wrong sizes), then hands the bytes to a pure `parse_<file>` function that the tests feed with captured data.
All OS errors cross one boundary, `_proc_error`, where they become `ProcessGone` (normal churn) or
`ProcessAccessDenied`. `ProcFS` owns every path under the root: per-process files, a process's network tables
(`read_net_table`), and where the host's filesystem is mounted beside it (`host_root`). The files the check reads on
every run have batch readers too (`read_stats`, `read_cpu_times`): one call for every process, where a chain of
calls per file cost more than the file's read.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from stat import S_ISREG
from typing import NamedTuple, TypeVar

from ..configuration import DEFAULT_PROCFS_ROOT
from .beneath import open_beneath

T = TypeVar('T')

# One read returns a whole stat, statm, schedstat or comm file, and the title at the start of cmdline.
CHUNK = 4096
# One read() of a seq_file returns as many whole lines as fit in the buffer: a large buffer keeps a socket table with
# a few thousand sockets to a handful of syscalls.
NET_CHUNK = 256 * 1024
# A /proc/net/tcp line is 150 bytes: 64 MiB is ~450,000 sockets. Beyond that the read itself would cost more than
# a check run may take, so stop instead of growing without bound.
NET_MAX_BYTES = 64 * 1024 * 1024


class ProcError(Exception):
    """A per-process file could not be read."""

    def __init__(self, pid: int, path: str, reason: str):
        super().__init__('%s: %s' % (path, reason))
        self.pid = pid
        self.path = path


class ProcessGone(ProcError):
    """The process exited (or became a zombie) between listing and reading: ordinary churn."""


class ProcessAccessDenied(ProcError):
    """The Agent's user may not read this file of this process (ptrace access mode, hidepid, non-dumpable)."""


class ProcUnsupported(ProcError):
    """The kernel does not provide this file (e.g. no CONFIG_PROC_CHILDREN or CONFIG_SCHED_INFO)."""


class ProcTooLarge(ProcError):
    """The file is larger than the check reads: a table of more sockets than a run may spend time on."""


class ProcessKey(NamedTuple):
    """A process identity that survives pid reuse: the pid and its start time in clock ticks since boot.

    A named tuple rather than a frozen dataclass: keys are hashed and compared several times per process on every
    run (title cache, CPU and PSS baselines, worker churn), and a tuple does both in C (0.1 us against 0.5 us).
    """

    pid: int
    start_ticks: int


class Stat:
    """The fields of /proc/PID/stat the check uses; times in clock ticks (see `SC_CLK_TCK`). Never modified.

    A class with slots rather than a frozen dataclass: one is built for every process the check looks at on every
    run, and a frozen dataclass (one object.__setattr__ per field, and a cached_property for the key) cost 3.0 us
    against 0.8 with its key. `key` is built with it because nearly every Stat has it looked up several times (title
    cache, baselines, churn).
    """

    __slots__ = (
        'pid',
        'comm',
        'state',
        'ppid',
        'utime_ticks',
        'stime_ticks',
        'num_threads',
        'start_ticks',
        'rss_pages',
        'key',
    )
    _FIELDS = __slots__[:-1]  # `key` follows from pid and start_ticks

    def __init__(
        self,
        pid: int,
        comm: str,
        state: str,
        ppid: int,
        utime_ticks: int,
        stime_ticks: int,
        num_threads: int,
        start_ticks: int,
        rss_pages: int,
    ):
        self.pid = pid
        self.comm = comm
        self.state = state
        self.ppid = ppid
        self.utime_ticks = utime_ticks
        self.stime_ticks = stime_ticks
        self.num_threads = num_threads
        self.start_ticks = start_ticks
        self.rss_pages = rss_pages
        self.key = ProcessKey(pid, start_ticks)

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if type(other) is Stat else NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return 'Stat(%s)' % ', '.join('%s=%r' % (name, getattr(self, name)) for name in self._FIELDS)

    @property
    def cpu_ticks(self) -> int:
        return self.utime_ticks + self.stime_ticks


class SchedStat(NamedTuple):
    """/proc/PID/schedstat: nanoseconds on a CPU, nanoseconds waiting on a run queue, and timeslices run."""

    on_cpu_ns: int
    run_delay_ns: int
    timeslices: int


class CpuTime(NamedTuple):
    """The CPU time of a process as the check samples it: from schedstat, or from clock ticks without a wait."""

    on_cpu_ns: int
    run_delay_ns: int | None  # None where only clock ticks are available


def parse_stat(data: bytes) -> Stat:
    # comm may hold spaces and parentheses ('(gunicorn: maste)', or a hostile '(a) (b)'): it ends at the LAST ')'.
    # Parsed as bytes and only comm decoded: this runs for every worker on every run (1.9 us against 4.6 us).
    open_paren = data.index(b'(')
    close_paren = data.rindex(b')')
    # Split no further than the last field used (rss, field 24): the 28 after it are never looked at.
    fields = data[close_paren + 2 :].split(None, 22)
    # proc(5) numbers fields from 1; `fields[0]` is field 3 (state).
    return Stat(
        int(data[:open_paren]),  # pid
        data[open_paren + 1 : close_paren].decode('utf-8', 'replace'),  # comm
        fields[0].decode('ascii'),  # state
        int(fields[1]),  # ppid
        int(fields[11]),  # utime
        int(fields[12]),  # stime
        int(fields[17]),  # num_threads
        int(fields[19]),  # starttime
        int(fields[21]),  # rss
    )


def parse_schedstat(data: bytes) -> SchedStat:
    on_cpu, run_delay, slices = data.split()[:3]
    return SchedStat(int(on_cpu), int(run_delay), int(slices))


def parse_cmdline(data: bytes) -> list[str]:
    """Split a command line into arguments; setproctitle leaves the title followed by NUL padding."""
    # Strip the padding before splitting: a titled master's line is a short title and about 4 KB of NULs, which
    # popping one empty argument at a time turned into hundreds of list operations on every run.
    text = data.rstrip(b'\0').decode('utf-8', 'replace')
    return text.split('\0') if text else []


def parse_argv0(data: bytes) -> str:
    """The process title as the process set it: argv[0], or the whole line when it holds no NUL separator.

    setproctitle may write a title without a terminating NUL (psutil then splits it on spaces, which is how the
    historical check missed masters named with spaces); the first NUL-terminated string is the title either way.
    """
    return data.split(b'\0', 1)[0].decode('utf-8', 'replace')


def parse_uptime(data: bytes) -> float:
    """Seconds since boot, the clock that /proc/PID/stat's start time counts on (in ticks)."""
    return float(data.split()[0])


def parse_smaps_rollup_pss(data: bytes) -> int:
    """Proportional set size in bytes: each shared page divided among the processes that map it."""
    for line in data.splitlines():
        if line.startswith(b'Pss:'):
            return int(line.split()[1]) * 1024
    raise ValueError('no Pss line')


def parse_children(data: bytes) -> set[int]:
    return {int(pid) for pid in data.split()}


def is_procfs(path: str, mountinfo: str = '/proc/self/mountinfo') -> bool:
    """Whether `path` lies on a proc filesystem: the type of the longest mount point above it in mountinfo."""
    real = os.path.realpath(path)
    try:
        with open(mountinfo, 'rb') as f:
            lines = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return False
    best, best_type = '', None
    for line in lines:
        fields = line.split(' ')
        if '-' not in fields[6:]:
            continue
        # proc(5): field 5 is the mount point (octal escapes for spaces and the like); the type follows the '-'.
        point = re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), fields[4])
        fstype = fields[fields.index('-', 6) + 1]
        if (real == point or real.startswith(point.rstrip('/') + '/')) and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type == 'proc'


class Status(NamedTuple):
    """What /proc/PID/status says of who a process is."""

    uid: int  # effective: the user `ps` shows, and the owner of the files it creates
    ns_pid: int  # its pid in its own PID namespace (the last of NSpid): what the process itself calls os.getpid()


def parse_status(data: bytes, pid: int) -> Status:
    """`Uid:` (real, effective, saved, filesystem) and `NSpid:` (this namespace first, the process's own last; absent
    before Linux 4.1, where `pid` stands for it) of /proc/PID/status."""
    # Two lines looked up, not some fifty split: the check verifies each master's identity from this on every run
    # (measured: 1.7 us against 7.0 us).
    uid = _status_value(data, b'Uid:')
    if uid is None:
        raise ValueError('no Uid line')
    ns_pid = _status_value(data, b'NSpid:')
    return Status(int(uid.split()[1]), pid if ns_pid is None else int(ns_pid.split()[-1]))


def _status_value(data: bytes, name: bytes) -> bytes | None:
    """What follows `name` on its line of a status file, or None without such a line."""
    if data.startswith(name):
        start = len(name)
    else:
        start = data.find(b'\n' + name)
        if start < 0:
            return None
        start += 1 + len(name)
    end = data.find(b'\n', start)
    return data[start:] if end < 0 else data[start:end]


def parse_boot_time(data: bytes) -> int:
    """`btime` of /proc/stat: the boot time in seconds since the epoch, which process start ticks count from."""
    for line in data.splitlines():
        if line.startswith(b'btime '):
            return int(line.split()[1])
    raise ValueError('no btime line')


def parse_forks(data: bytes) -> int:
    """The `processes` line of /proc/stat: processes and threads created since boot, in every PID namespace."""
    for line in data.splitlines():
        if line.startswith(b'processes '):
            return int(line.split()[1])
    raise ValueError('no processes line')


def parse_last_pid(data: bytes) -> int:
    """The last field of /proc/loadavg: the pid most recently allocated in the reader's PID namespace."""
    return int(data.split()[4])


def parse_environ(data: bytes, names: frozenset[str]) -> dict[str, str]:
    """Only the variables in `names`: the rest of an environment may hold secrets and is never kept."""
    found = {}
    for entry in data.split(b'\0'):
        name, eq, value = entry.partition(b'=')
        key = name.decode('utf-8', 'replace')
        if eq and key in names:
            found[key] = value.decode('utf-8', 'replace')
    return found


def parse_mapped_paths(data: bytes) -> list[str]:
    """The distinct file paths of a maps file, in order (proc(5): the sixth field, after five without spaces)."""
    paths: dict[str, None] = {}
    for line in data.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith(b'/'):
            paths[fields[5].decode('utf-8', 'surrogateescape')] = None
    return list(paths)


def parse_mount_options(mountinfo: bytes, mount_point: str) -> set[str] | None:
    """The mount and super-block options of the mount at `mount_point` in a mountinfo table (proc(5)), or None."""
    options = None
    for line in mountinfo.decode('utf-8', 'replace').splitlines():
        fields = line.split(' ')
        if len(fields) < 10 or fields[4] != mount_point or '-' not in fields[6:]:
            continue
        separator = fields.index('-', 6)
        # The last mount stacked on a mount point is the one visible there.
        options = set(fields[5].split(',')) | set(fields[separator + 3].split(','))
    return options


def socket_inodes(fd_links: tuple[str, ...] | list[str]) -> frozenset[int]:
    """Inodes of the sockets among fd link targets (`socket:[12345]`)."""
    return frozenset(int(link[8:-1]) for link in fd_links if link.startswith('socket:[') and link.endswith(']'))


def holds_event_poll(fd_links: tuple[str, ...] | list[str]) -> bool:
    """Whether an epoll instance is among fd link targets: what every event loop (selectors, asyncio, libev) opens."""
    return 'anon_inode:[eventpoll]' in fd_links


def held_files_limit() -> int:
    """How many files one check instance may keep open: an eighth of the soft limit, and no more than 1,024.

    The Agent runs every check in one process; a Python process started by hand often has a soft limit of 1,024.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(0, min(1024, soft // 8))


def _close_all(held: dict[tuple[int, str], int]) -> None:
    while held:
        os.close(held.popitem()[1])


def _proc_error(exc: OSError, pid: int, path: str) -> ProcError:
    """The one place where an OS error reading a process's file becomes a `ProcError`."""
    if isinstance(exc, (FileNotFoundError, ProcessLookupError)) or exc.errno == errno.ESRCH:
        # ESRCH: the task died while the kernel was producing the file, or before a read of a file opened earlier.
        return ProcessGone(pid, path, 'process gone')
    if isinstance(exc, PermissionError):
        return ProcessAccessDenied(pid, path, 'permission denied')
    return ProcessAccessDenied(pid, path, os.strerror(exc.errno or 0))


class ProcFS:
    """The process tree as seen under `root` (the Agent's procfs_path, e.g. /host/proc in a container).

    With `max_held`, the stat, schedstat (per process and per thread) and command-line files it reads stay open, up
    to that many, until a call to `release_unused` finds them unread since the previous call: the check reads the
    same few of them on every run, and reading an open file again is one pread() where reading by path is open, read
    and close (measured: 4 us against 9 us for a stat, 1.3 us against 7 us for a worker's schedstat). It reads the
    same thing: an open /proc file is tied to the process it was opened for, so once that process has been reaped
    the read fails (ESRCH) and the file is opened again by path, which finds whatever process has the pid by then,
    or none.

    The thread ids of a process are remembered from its last listing under /proc/PID/task, and stand in for a new
    listing while /proc/PID/stat counts as many threads and each remembered one still reads: each thread that reads
    was alive when the threads were counted (a thread id comes back only once the pid space wraps), so those are all
    of them.
    """

    def __init__(self, root: str = DEFAULT_PROCFS_ROOT, max_held: int = 0):
        self.root = root.rstrip('/') or '/'
        self._on_procfs = is_procfs(self.root)
        # Only a proc filesystem ties an open file to its process: a tree of regular files (the tests' fake roots)
        # would keep showing a process whose files were deleted. Such roots are read by path.
        self.max_held = max_held if self._on_procfs else 0
        self._held: dict[tuple[int, str], int] = {}
        # Held files read since the last `release_unused`, and (pid, 'task') for each remembered thread list used.
        self._read_since_release: set[tuple[int, str]] = set()
        self._threads: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        # Closed with the object even if nobody calls close(): descriptors must not outlive a dropped check.
        self._finalizer = weakref.finalize(self, _close_all, self._held)

    def path(self, pid: int | str, *parts: str) -> str:
        return '/'.join((self.root, str(pid), *parts))

    def pids(self) -> list[int]:
        return [int(name) for name in os.listdir(self.root) if name.isdigit()]

    def _read(self, pid: int | str, *parts: str, whole: bool = False) -> bytes:
        """One file's contents: a single read of up to `CHUNK` bytes, or the whole file when `whole` is set.

        os.open/os.read skip the buffered file object, which costs more than the read itself for these small files
        (measured: 9 us against 16 us per file), and this runs for every worker on every check run.
        """
        path = '%s/%s/%s' % (self.root, pid, '/'.join(parts))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, CHUNK)
                if whole and len(data) == CHUNK:
                    chunks = [data]
                    while chunk := os.read(fd, CHUNK):
                        chunks.append(chunk)
                    data = b''.join(chunks)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _proc_error(exc, int(pid), path) from exc
        return data

    def _read_held_files(self, keys: list[tuple[int, str]]) -> list[bytes | ProcError]:
        """The contents of each (pid, name) file, or the error reading it; the caller holds `_lock`.

        From its open descriptor if held, else by path (and then held if room is left). One call for many files: the
        check reads every worker's schedstat twice per run, and a call per file cost more than its pread.
        """
        held = self._held
        read = self._read_since_release
        results: list[bytes | ProcError] = []
        for key in keys:
            fd = held.get(key)
            if fd is not None:
                try:
                    results.append(os.pread(fd, CHUNK, 0))
                except OSError:
                    # The process it was opened for is gone; its pid may be another process's by now: read by path.
                    del held[key]
                    os.close(fd)
                else:
                    read.add(key)
                    continue
            pid, name = key
            path = '%s/%s/%s' % (self.root, pid, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                results.append(_proc_error(exc, pid, path))
                continue
            try:
                data = os.read(fd, CHUNK)
            except OSError as exc:
                os.close(fd)
                results.append(_proc_error(exc, pid, path))
                continue
            if len(held) < self.max_held:
                held[key] = fd
                read.add(key)
            else:
                os.close(fd)
            results.append(data)
        return results

    def _read_held(self, pid: int, name: str) -> bytes:
        # `close()` may come from another thread (AgentCheck.cancel() during a run): a descriptor must never be
        # read after it is closed, when its number may already belong to another file.
        with self._lock:
            (data,) = self._read_held_files([(pid, name)])
        if isinstance(data, ProcError):
            raise data
        return data

    def release_unused(self) -> None:
        """Close the held files not read since the last call, and forget thread lists not used since then either:
        their processes left the check's view."""
        with self._lock:
            for key in [k for k in self._held if k not in self._read_since_release]:
                os.close(self._held.pop(key))
            for pid in [p for p in self._threads if (p, 'task') not in self._read_since_release]:
                del self._threads[pid]
            self._read_since_release.clear()

    def close(self) -> None:
        """Close every held file and hold no more."""
        with self._lock:
            self.max_held = 0
            _close_all(self._held)
            self._read_since_release.clear()

    @property
    def held(self) -> int:
        return len(self._held)

    def read_stat(self, pid: int) -> Stat:
        data = self._read_held(pid, 'stat')
        try:
            return parse_stat(data)
        except (ValueError, IndexError) as exc:
            raise ProcessGone(pid, self.path(pid, 'stat'), 'unparsable stat %r' % data[:80]) from exc

    def read_stats(self, pids: Iterable[int]) -> dict[int, Stat]:
        """`read_stat` of each pid, in their order, leaving out those that cannot be read (exited, or not ours)."""
        pids = list(pids)
        with self._lock:
            results = self._read_held_files([(pid, 'stat') for pid in pids])
        stats = {}
        for pid, data in zip(pids, results, strict=True):
            if isinstance(data, bytes):
                try:
                    stats[pid] = parse_stat(data)
                except (ValueError, IndexError):
                    continue  # what read_stat reports as ProcessGone
        return stats

    def read_cpu_times(
        self, pids: Iterable[int], threads: Mapping[int, int] | None = None
    ) -> tuple[dict[int, CpuTime], dict[int, ProcError]]:
        """On-CPU and run-queue times from the schedstat of each pid, in the order of `pids`, and why the rest failed.

        A pid with more than one thread in `threads` is summed over its threads (`_read_thread_schedstats`).
        This reads every worker twice per run, so its loop does the work of `_read_held_files` and `parse_schedstat`
        itself for an open file, and builds the CpuTime the sampler keeps (measured for a pass over 16 workers on a
        cold cache, as after the sample window: 172 us, against 194 us through those two and a SchedStat converted);
        anything else goes through them.
        """
        found: dict[int, CpuTime] = {}
        failed: dict[int, ProcError] = {}
        held = self._held
        read = self._read_since_release
        with self._lock:
            for pid in pids:
                try:
                    if threads is not None and threads.get(pid, 1) > 1:
                        on_cpu, delay, _ = self._read_thread_schedstats(pid)
                        found[pid] = CpuTime(on_cpu, delay)
                        continue
                    key = (pid, 'schedstat')
                    fd = held.get(key)
                    data = None
                    if fd is not None:
                        try:
                            data = os.pread(fd, CHUNK, 0)
                        except OSError:
                            pass  # the process is gone: _read_held_files drops the file and reads by path
                        else:
                            read.add(key)
                    if data is None:
                        (data,) = self._read_held_files([key])
                        if isinstance(data, ProcError):
                            raise data
                    try:
                        on_cpu, delay, _ = data.split()[:3]
                        found[pid] = CpuTime(int(on_cpu), int(delay))
                    except ValueError as exc:
                        path = self.path(pid, 'schedstat')
                        raise ProcUnsupported(pid, path, 'unparsable schedstat %r' % data[:80]) from exc
                except ProcError as exc:
                    failed[pid] = exc
        return found, failed

    def _read_thread_schedstats(self, pid: int) -> SchedStat:
        """schedstat summed over the threads of `pid`: /proc/PID/schedstat counts only its main thread.

        A thread that exited took its time with it (unlike /proc/PID/stat, whose ticks keep dead threads' time), so
        successive sums can shrink when one exits: callers clamp differences at zero. The lock is held.
        """
        tids = self._threads.get(pid)
        if tids is not None and self._thread_count(pid) == len(tids):
            total, alive = self._sum_thread_schedstats(pid, tids)
            if len(alive) == len(tids):
                self._read_since_release.add((pid, 'task'))
                return total
            # A remembered thread exited (and another took its place, or the count would differ): list again.
        tids = self._listdir(pid, 'task')
        total, alive = self._sum_thread_schedstats(pid, tids)
        if not tids:
            raise ProcessGone(pid, self.path(pid, 'task'), 'no threads left')
        self._threads[pid] = alive
        self._read_since_release.add((pid, 'task'))
        return total

    def _thread_count(self, pid: int) -> int | None:
        """The number of threads /proc/PID/stat shows now, or None if it cannot tell (the lock is held)."""
        (data,) = self._read_held_files([(pid, 'stat')])
        try:
            return parse_stat(data).num_threads if isinstance(data, bytes) else None
        except (ValueError, IndexError):
            return None

    def _sum_thread_schedstats(self, pid: int, tids: list[str]) -> tuple[SchedStat, list[str]]:
        """The schedstat of those of `tids` still alive, summed, and which they are (the lock is held)."""
        results = self._read_held_files([(pid, 'task/%s/schedstat' % tid) for tid in tids])
        on_cpu = delay = slices = 0
        alive = []
        for tid, data in zip(tids, results, strict=True):
            if isinstance(data, ProcessGone):
                continue  # that thread exited since it was listed
            if isinstance(data, ProcError):
                raise data
            try:
                sched = parse_schedstat(data)
            except ValueError as exc:
                raise ProcUnsupported(pid, self.path(pid, 'task', tid, 'schedstat'), 'unparsable schedstat') from exc
            on_cpu += sched.on_cpu_ns
            delay += sched.run_delay_ns
            slices += sched.timeslices
            alive.append(tid)
        return SchedStat(on_cpu, delay, slices), alive

    def read_cmdline(self, pid: int) -> list[str]:
        return parse_cmdline(self._read(pid, 'cmdline', whole=True))

    def read_title(self, pid: int) -> str:
        # Held like stat: the check reads its masters' titles on every run. An open cmdline fails its read (ESRCH)
        # once its process is gone, as stat does.
        return parse_argv0(self._read_held(pid, 'cmdline'))

    def _listdir(self, pid: int, name: str) -> list[str]:
        path = self.path(pid, name)
        try:
            return os.listdir(path)
        except OSError as exc:
            raise _proc_error(exc, pid, path) from exc

    def read_uptime(self) -> float:
        if self._on_procfs:
            # /proc/uptime is this clock, in the reader's time namespace like the start times in /proc/PID/stat; its
            # buffered open, read and close cost 15 us, the clock 0.1.
            return time.clock_gettime(time.CLOCK_BOOTTIME)
        return self._read_root_file('uptime', parse_uptime, 'cannot read uptime')

    def read_pss(self, pid: int) -> int:
        """PSS from smaps_rollup (Linux 4.14+); needs ptrace-level access to another user's process."""
        data = self._read(pid, 'smaps_rollup', whole=True)
        try:
            return parse_smaps_rollup_pss(data)
        except (ValueError, IndexError) as exc:
            raise ProcUnsupported(pid, self.path(pid, 'smaps_rollup'), 'no Pss in smaps_rollup') from exc

    def read_comm(self, pid: int) -> str:
        return self._read(pid, 'comm').rstrip(b'\n').decode('utf-8', 'replace')

    def read_fd_links(self, pid: int) -> tuple[str, ...]:
        """What each open file descriptor of `pid` points to (`socket:[N]`, `anon_inode:[eventpoll]`, a path).

        Needs ptrace read access (root or CAP_SYS_PTRACE for another user's process, and even for the same user once a
        process dropped privileges and became non-dumpable): raises ProcessAccessDenied. Costs a readlink per fd,
        about 5 us each.
        """
        fd_dir = self.path(pid, 'fd')
        names = self._listdir(pid, 'fd')
        links = []
        for name in names:
            try:
                links.append(os.readlink('%s/%s' % (fd_dir, name)))
            except FileNotFoundError:
                continue  # closed since the listing
            except PermissionError as exc:
                raise ProcessAccessDenied(pid, fd_dir, 'permission denied') from exc
            except OSError:
                continue
        return tuple(links)

    def read_status(self, pid: int) -> Status:
        data = self._read(pid, 'status', whole=True)
        try:
            return parse_status(data, pid)
        except (ValueError, IndexError) as exc:
            raise ProcessGone(pid, self.path(pid, 'status'), 'unparsable status') from exc

    def read_cgroup(self, pid: int) -> bytes:
        return self._read(pid, 'cgroup', whole=True)

    def read_environ(self, pid: int, names: frozenset[str]) -> dict[str, str]:
        """Selected environment variables (needs ptrace access: the same user, root or CAP_SYS_PTRACE)."""
        return parse_environ(self._read(pid, 'environ', whole=True), names)

    def read_mapped_paths(self, pid: int) -> list[str]:
        """The files mapped into `pid` (/proc/PID/maps, ptrace-level access): its interpreter and the extension modules
        it imported, with the real paths of their directories."""
        # A seq_file read returns whole lines only, often less than asked: read to the end, not to a short read.
        path = self.path(pid, 'maps')
        chunks = []
        try:
            with open(path, 'rb', buffering=0) as f:
                while chunk := f.read(NET_CHUNK):
                    chunks.append(chunk)
        except OSError as exc:
            raise _proc_error(exc, pid, path) from exc
        return parse_mapped_paths(b''.join(chunks))

    def read_cwd(self, pid: int) -> str:
        """`pid`'s working directory, where Gunicorn resolves its relative paths (ptrace-level access)."""
        path = self.path(pid, 'cwd')
        try:
            return os.readlink(path)
        except OSError as exc:
            raise _proc_error(exc, pid, path) from exc

    def shares_root(self, pid: int) -> bool | None:
        """Whether `pid`'s root directory is this process's (None when /proc/PID/root may not be followed)."""
        try:
            theirs = os.stat(self.path(pid, 'root'))
            ours = os.stat('/')
        except OSError:
            return None
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    def read_boot_time(self) -> int:
        return self._read_root_file('stat', parse_boot_time, 'no boot time')

    def read_forks(self) -> int:
        """How many processes and threads the kernel has created since boot: unchanged means none was."""
        return self._read_root_file('stat', parse_forks, 'no fork count')

    def read_last_pid(self) -> int | None:
        """The pid the kernel allocated last, when this root is the proc of this process's own PID namespace; else
        None. /proc/loadavg reports it for the namespace of whoever reads it, not for the namespace of the mount, so
        it means something only when `self` under the root is this process (the Agent sharing the host's PIDs)."""
        try:
            if os.readlink('%s/self' % self.root) != str(os.getpid()):
                return None
        except OSError:
            return None
        try:
            return self._read_root_file('loadavg', parse_last_pid, 'no last pid')
        except ProcUnsupported:
            return None

    def read_pid_max(self) -> int | None:
        """kernel.pid_max: pids are allocated below it, then wrap around (to 300, RESERVED_PIDS in kernel/pid.c)."""
        try:
            return self._read_root_file('sys/kernel/pid_max', int, 'no pid_max')
        except ProcUnsupported:
            return None

    def read_tgid(self, pid: int) -> int:
        """The process a task id belongs to: itself for a process, another pid for one of its threads. /proc/TID is
        there for every thread too, though the listing of the root shows processes only."""
        tgid = _status_value(self._read(pid, 'status'), b'Tgid:')
        if tgid is None:
            raise ProcessGone(pid, self.path(pid, 'status'), 'no Tgid line')
        return int(tgid)

    def read_file_of(self, pid: int, path: str, max_bytes: int) -> bytes:
        """A regular file as process `pid` names it: relative to its working directory, absolute within its root.

        Every component is opened without following symbolic links: through /proc/PID/root an absolute link would
        resolve against this process's root, not the other one's, and a link could lead anywhere the Agent may read.
        `..` is refused for the same reason. A FIFO or device would block or never end: only a regular file of at
        most `max_bytes` is read. Needs ptrace-level access to the process (its cwd and root links).
        """
        parts = [part for part in path.split('/') if part not in ('', '.')]
        where = self.path(pid, 'root' if path.startswith('/') else 'cwd')
        shown = '%s -> %s' % (where, path)
        if not parts or '..' in parts:
            raise ProcessAccessDenied(pid, shown, 'not a plain path')
        try:
            # O_NONBLOCK: the last component is reopened for reading before its type is known, and a FIFO would block.
            fd = open_beneath(where, path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                info = os.fstat(fd)
                if not S_ISREG(info.st_mode):
                    raise ProcessAccessDenied(pid, shown, 'not a regular file')
                if info.st_size > max_bytes:
                    raise ProcTooLarge(pid, shown, 'larger than %d bytes' % max_bytes)
                data = os.read(fd, max_bytes + 1)
            finally:
                os.close(fd)
        except OSError as exc:
            # ELOOP (LinkRefused): a symbolic link on the way. A missing file is not the process gone.
            if isinstance(exc, FileNotFoundError) and os.path.exists(self.path(pid)):
                raise ProcUnsupported(pid, shown, 'no such file') from exc
            raise _proc_error(exc, pid, shown) from exc
        if len(data) > max_bytes:
            raise ProcTooLarge(pid, shown, 'larger than %d bytes' % max_bytes)
        return data

    def _read_root_file(self, name: str, parse: Callable[[bytes], T], failure: str) -> T:
        """A system-wide file directly under the root, parsed; any failure is the root's, not a process's."""
        path = '%s/%s' % (self.root, name)
        try:
            with open(path, 'rb') as f:
                return parse(f.read())
        except (OSError, ValueError, IndexError) as exc:
            raise ProcUnsupported(0, path, '%s: %s' % (failure, exc)) from exc

    def mount_options(self, mountinfo: str = '/proc/self/mountinfo') -> set[str] | None:
        """Options of the proc mount at `root` as this process sees it (`hidepid=` hides other users' processes)."""
        try:
            with open(mountinfo, 'rb') as f:
                return parse_mount_options(f.read(), os.path.realpath(self.root))
        except OSError:
            return None

    def hidepid(self) -> str | None:
        """The `hidepid=` option of the proc mount, when it hides anything (hidepid=0 / `off` does not)."""
        for option in sorted(self.mount_options() or ()):
            if option.startswith('hidepid=') and option.split('=', 1)[1] not in ('0', 'off'):
                return option
        return None

    def read_children(self, pid: int, threads: int | None = None) -> set[int]:
        """Children of every thread of `pid` (a child is listed under the thread that forked it).

        The kernel builds this list without locking the whole tree, so callers must confirm each child's ppid.
        `threads` is the thread count /proc/PID/stat showed just before, which lets the thread list remembered from an
        earlier listing stand in for a new one. Children files are read by path even then: an open one whose thread
        exited reads empty instead of failing, so only a read by path shows that a remembered thread is gone.
        """
        tids = self._threads.get(pid) if threads is not None else None
        if tids is not None and len(tids) == threads:
            children: set[int] = set()
            try:
                for tid in tids:
                    children |= parse_children(self._read(pid, 'task', tid, 'children'))
            except ProcessGone:
                pass  # a remembered thread exited: list them again
            else:
                self._read_since_release.add((pid, 'task'))
                return children
        tids = self._listdir(pid, 'task')
        children = set()
        alive = []
        for tid in tids:
            try:
                children |= parse_children(self._read(pid, 'task', tid, 'children'))
            except ProcessGone:
                if not os.path.exists(self.path(pid)):
                    raise
                if not os.path.exists(self.path(pid, 'task', tid)):
                    continue  # that thread exited: its children moved to another thread or were reaped
                raise ProcUnsupported(pid, self.path(pid, 'task', tid, 'children'), 'no CONFIG_PROC_CHILDREN') from None
            alive.append(tid)
        self._threads[pid] = alive
        self._read_since_release.add((pid, 'task'))
        return children

    # Network namespaces

    def read_net_table(self, pid: int, name: str, stop: Callable[[bytes], bool] | None = None) -> bytes | None:
        """/proc/PID/net/NAME whole (tcp, tcp6, unix), or up to the first line `stop` is true of; None when the kernel
        has no such table while the process lives (tcp6 with IPv6 disabled).

        Read in large chunks and never beyond `NET_MAX_BYTES` (ProcTooLarge). seq_file never splits a line between
        two reads, so `stop` sees whole lines, and closing the file early spares the kernel the rest of its walk.
        """
        path = self.path(pid, 'net', name)
        kept: list[bytes] = []
        size = 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                while chunk := os.read(fd, NET_CHUNK):
                    size += len(chunk)
                    if stop is not None:
                        for line in chunk.split(b'\n'):
                            if stop(line):
                                return b'\n'.join(kept)
                            kept.append(line)
                    else:
                        kept.append(chunk)
                    if size > NET_MAX_BYTES:
                        raise ProcTooLarge(pid, path, 'larger than %d bytes' % NET_MAX_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and os.path.isdir(self.path(pid)):
                return None
            raise _proc_error(exc, pid, path) from exc
        return (b'\n' if stop is not None else b'').join(kept)

    def shares_network_namespace(self, pid: int) -> bool | None:
        """Whether PID shares this process's network namespace (so that sock_diag sees its sockets); None if unknown.

        /proc/PID/ns/net names the namespace, but stat() of another user's needs ptrace access. Without it, the inode
        of /proc/PID/net/tcp (world-readable) tells as well: every network namespace registers its own proc entries
        (tcp4_proc_init_net), whose inode numbers come from one system-wide allocator and are the same through every
        procfs mount, so two processes show the same inode exactly when they share the namespace. None when neither
        can be read (the process is gone, or its /proc directory is hidden).
        """
        for name in ('ns/net', 'net/tcp'):
            try:
                own = os.stat('/proc/self/%s' % name)
                theirs = os.stat(self.path(pid, name))
            except OSError:
                continue
            if name == 'ns/net':
                return (own.st_dev, own.st_ino) == (theirs.st_dev, theirs.st_ino)
            return own.st_ino == theirs.st_ino
        return None

    @property
    def host_root(self) -> str:
        """Where the host's filesystem is mounted for the Agent: '' for /proc, '/host' for /host/proc."""
        parent, name = os.path.split(self.root.rstrip('/'))
        return '' if parent in ('', '/') or name != 'proc' else parent
