"""Every Gunicorn master on the host, each named after its application, selected and bounded (`app_autodiscovery`).

A node-wide instance must notice a master that starts (pods start all the time) without paying, on every run, for
every process of the host: listing /proc alone costs about 1.3 us a process (6.6 ms at 5,000). The process table is
therefore watched, not walked:

- When the Agent shares the host's PID namespace, /proc/loadavg names the last pid the kernel allocated. Pids are
  allocated in increasing order until they wrap, so the processes new since the last run are among the pids
  allocated since: only those are looked at (a thread id is one too, and is skipped), and the table is not listed.
- Otherwise `/proc/stat` counts the processes and threads created since boot, in every PID namespace: while it does
  not move, nothing is looked at; when it moves, the table is listed and only the pids that were not in the last
  listing are looked at.
- Looking at a process is reading its comm (15 bytes). A process forked by a program that has not exec'd yet shows
  its parent's comm: a new pid is looked at again in the next run.
- Processes whose comm may be Gunicorn's (a master's title, `gunicorn`, a Python interpreter) are watched: read again
  on every run, to see them become masters (a `--preload` master sets its title once the application is imported),
  stop being ones, or go. Python processes that do not run Gunicorn are dropped once their command line says so.
- A new worker makes its parent be looked at again: a shell that exec'd Gunicorn keeps its pid and was seen as a
  shell, but the workers it forks next are new.
- The whole table is looked at again every `RESCAN_SECONDS`, as in single-application mode, for what no fork reveals
  (a Python process that exec'd Gunicorn and forked nothing yet), and whenever too many pids were allocated since the
  last run to look at each.

The processes under each master are found as in single-application mode (`Discovery.tree`), from which this class
inherits the trees and their caches.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..sources.app_names import AppName, titled_name, untitled_name
from ..sources.cmdline import GunicornCommand, parse_gunicorn
from ..sources.procfs import ProcError, ProcessAccessDenied, ProcessKey, ProcFS, ProcUnsupported, Stat
from ..sources.titles import Role, base_name, parse_title
from .discovery import MASTER_COMM_PREFIX, RESCAN_SECONDS, Discovery, Master, Sightings, may_run_gunicorn, top_level

DEFAULT_MAX_APPS = 50
# Past this many pids allocated since the last run, one listing of the table (about 1.3 us a process) costs less
# than looking at each pid.
MAX_PROBED_PIDS = 4096
# Comm of a titled worker, dirty arbiter or dirty worker: setproctitle's first 15 bytes of `gunicorn: worker [...]`.
_TITLED_CHILD_COMM = 'gunicorn: '


@dataclass(frozen=True)
class AppSelection:
    """Which application names an instance reports, and how many at most (Postgres' `database_autodiscovery` shape:
    patterns matched from the start of the name, case ignored, exclusion winning)."""

    include: tuple[re.Pattern, ...] = ()
    exclude: tuple[re.Pattern, ...] = ()
    max_apps: int = DEFAULT_MAX_APPS

    @classmethod
    def of(cls, include: Iterable[str] | None, exclude: Iterable[str] | None, max_apps: int | None) -> AppSelection:
        return cls(
            tuple(re.compile(p, re.IGNORECASE) for p in include or ()),
            tuple(re.compile(p, re.IGNORECASE) for p in exclude or ()),
            max_apps or DEFAULT_MAX_APPS,
        )

    def wanted(self, app: str) -> bool:
        if any(p.match(app) for p in self.exclude):
            return False
        return not self.include or any(p.match(app) for p in self.include)

    def bound(self, apps: Iterable[str], reported: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """The apps kept within `max_apps` and those left out. Apps reported in the last run are kept first, so
        that an app starting elsewhere on the node never pushes one out of the series it was sending."""
        apps = set(apps)
        earlier = set(reported)
        ordered = sorted(apps, key=lambda app: (app not in earlier, app))
        return ordered[: self.max_apps], ordered[self.max_apps :]


@dataclass
class _Watched:
    """A process whose comm may be Gunicorn's, read on every run."""

    key: ProcessKey
    command: GunicornCommand | None = None  # for a process without a title: what it runs (None: not read yet)


@dataclass
class ProcessTable:
    """The Gunicorn masters of the host, kept up to date from the processes that are new since the last run."""

    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    clock: Callable[[], float] = time.monotonic
    scans: int = 0  # full looks at the table
    listings: int = 0  # listings of the table (full or not)
    examined: int = 0  # processes whose comm was read because they were new (or once more)
    _forks: int | None = None
    _last_pid: int | None = None
    _pid_max: int | None = None
    _listed: set[int] = field(default_factory=set)
    _fresh: dict[int, str] = field(default_factory=dict)  # pids new in the last run, and the comm they showed
    _watched: dict[int, _Watched] = field(default_factory=dict)
    _names: dict[ProcessKey, AppName] = field(default_factory=dict)
    _last_scan: float | None = None

    def masters(self, seen: Sightings) -> list[tuple[Master, AppName]]:
        """Every top-level master of the host, with its name; `seen` is filled with what the examination saw."""
        self._examine_new(seen)
        titled: list[Master] = []
        commands: dict[int, tuple[Stat, GunicornCommand]] = {}
        for pid, watched in list(self._watched.items()):
            master = self._reread(pid, watched, seen)
            if isinstance(master, Master):
                titled.append(master)
            elif master is not None:
                commands[pid] = master
        untitled = [
            Master(stat, None, command)
            for stat, command in commands.values()
            if stat.ppid not in commands or commands[stat.ppid][1].args != command.args
        ]
        found = top_level([*titled, *untitled])
        named = [(m, self._name(m)) for m in found]
        live = {m.stat.key for m, _ in named}
        self._names = {key: name for key, name in self._names.items() if key in live}
        for master, name in named:
            target = seen.titled if master.titled else seen.untitled
            target.setdefault(name.name, []).append(master.stat.pid)
        return [(Master(m.stat, name.name, m.command), name) for m, name in named]

    # Which processes to look at

    def _examine_new(self, seen: Sightings) -> None:
        full = self._last_scan is None or self.clock() - self._last_scan >= RESCAN_SECONDS
        last_pid = self.procfs.read_last_pid()
        previous, self._last_pid = self._last_pid, last_pid
        allocated = None if full or last_pid is None or previous is None else self._allocated(previous, last_pid)
        if allocated is not None:
            # Pids are handed out in increasing order, wrapping at pid_max: the new processes are among those
            # allocated since the last run, whatever the size of the table (a burst lists the table instead).
            self._examine_each(allocated, seen, probing=True)
            return
        forks = self._read_forks()
        if not full and not self._fresh and forks is not None and forks == self._forks:
            return  # no process was created since the last run: nothing can be new
        self._forks = forks
        try:
            listed = set(self.procfs.pids())
        except OSError as exc:
            seen.unreadable_root = '%s: %s' % (self.procfs.root, exc.strerror or exc)
            return
        self.listings += 1
        if full:
            self.scans += 1
            self._last_scan = self.clock()
            new = listed
        else:
            new = listed - self._listed
        for pid in self._listed - listed:
            self._watched.pop(pid, None)
        self._listed = listed
        seen.processes = len(listed)
        self._examine_each(sorted(new), seen, probing=False)
        if full:
            self._fresh = {}  # a whole table is not new: looking at all of it again next run would cost a listing

    def _examine_each(self, new: Iterable[int], seen: Sightings, probing: bool) -> None:
        """Look at the `new` pids, and again at those new in the last run whose comm changed since (an exec)."""
        again, self._fresh = self._fresh, {}
        parents: set[int] = set()
        for pid in new:
            again.pop(pid, None)
            parent = self._examine(pid, seen, probing)
            if parent is not None and parent not in self._watched:
                parents.add(parent)
        for pid, comm in again.items():
            try:
                changed = self.procfs.read_comm(pid) != comm
            except ProcError:
                continue
            if changed:
                parent = self._examine(pid, seen, probing)
                if parent is not None and parent not in self._watched:
                    parents.add(parent)
        for pid in parents:
            self._examine(pid, seen, probing=False)

    def _allocated(self, previous: int, last: int) -> Iterable[int] | None:
        """The pids allocated after `previous` up to `last`, or None when there are too many to look at one by one."""
        if previous <= last:
            return range(previous + 1, last + 1) if last - previous <= MAX_PROBED_PIDS else None
        if self._pid_max is None:
            self._pid_max = self.procfs.read_pid_max() or 0
        if not previous < self._pid_max or self._pid_max - previous + last > MAX_PROBED_PIDS:
            return None
        return itertools.chain(range(previous + 1, self._pid_max), range(1, last + 1))

    def _read_forks(self) -> int | None:
        try:
            return self.procfs.read_forks()
        except ProcUnsupported as exc:
            self.log.debug('Listing the process table on every run: %s', exc)
            return None

    def _examine(self, pid: int, seen: Sightings, probing: bool) -> int | None:
        """Watch `pid` if its comm may be Gunicorn's; the parent to look at too when it is a Gunicorn child."""
        self.examined += 1
        try:
            comm = self.procfs.read_comm(pid)
            self._fresh[pid] = comm
            ours = comm.startswith(MASTER_COMM_PREFIX) or may_run_gunicorn(comm)
            if not ours and not comm.startswith(_TITLED_CHILD_COMM):
                return None  # most processes of a host end here, after one 15-byte read
            if probing and self.procfs.read_tgid(pid) != pid:
                return None  # a thread (of a master, which names its threads as itself): not a process
            stat = self.procfs.read_stat(pid)
        except ProcessAccessDenied:
            seen.denied += 1
            return None
        except ProcError:
            return None
        if ours and (pid not in self._watched or self._watched[pid].key != stat.key):
            self._watched[pid] = _Watched(stat.key)
        # A titled master's parent is never Gunicorn's; a worker's (or an untitled process's) may be a master that
        # was something else when its pid was new.
        return None if comm.startswith(MASTER_COMM_PREFIX) else stat.ppid

    # Watched processes

    def _reread(self, pid: int, watched: _Watched, seen: Sightings) -> Master | tuple[Stat, GunicornCommand] | None:
        """A titled master, or an untitled process running Gunicorn with its command, or None (dropped if not ours)."""
        try:
            stat = self.procfs.read_stat(pid)
            comm = self.procfs.read_comm(pid)
        except ProcError:
            del self._watched[pid]
            return None
        if stat.key != watched.key:
            watched = self._watched[pid] = _Watched(stat.key)  # the pid was reused: a process seen for the first time
        if stat.state == 'Z':
            return None
        if comm.startswith(MASTER_COMM_PREFIX):
            try:
                title = parse_title(self.procfs.read_title(pid))
            except ProcError:
                return None
            if title is not None and title.role is Role.MASTER:
                return Master(stat, title.name)
            return None  # a fresh fork of a master, about to become a worker
        if not may_run_gunicorn(comm):
            del self._watched[pid]  # now a titled worker, or exec'd into something else
            return None
        if watched.command is None:
            try:
                watched.command = parse_gunicorn(self.procfs.read_cmdline(pid)) or _NOT_GUNICORN
            except ProcessAccessDenied:
                seen.denied += 1
                return None
            except ProcError:
                return None
        if watched.command is _NOT_GUNICORN:
            del self._watched[pid]  # a Python program that is not Gunicorn; RESCAN_SECONDS looks at it again
            return None
        return stat, watched.command

    def _name(self, master: Master) -> AppName:
        if master.command is None:
            return titled_name(master.name or '')
        name = self._names.get(master.stat.key)
        if name is None:
            # The environment and configuration file are read once per master, not once per run.
            name = self._names[master.stat.key] = untitled_name(self.procfs, master.stat.pid, master.command)
        return name


# parse_gunicorn's None, remembered: the command line of this process is not Gunicorn's.
_NOT_GUNICORN = GunicornCommand(argv=(), args=())


@dataclass
class AppDiscovery(Discovery):
    """Discovery for `app_autodiscovery`: the trees of every selected application's masters on the host."""

    selection: AppSelection = field(default_factory=AppSelection)
    left_out: list[str] = field(default_factory=list)  # apps found past max_apps in the last run
    _table: ProcessTable | None = None
    _reported: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        self._table = ProcessTable(self.procfs, self.log, self.clock)

    @property
    def table(self) -> ProcessTable:
        assert self._table is not None
        return self._table

    def _current_masters(self) -> list[Master]:
        self.sightings = Sightings(untitled_examined=True)
        by_app: dict[str, list[Master]] = {}
        for master, _ in self.table.masters(self.sightings):
            app = base_name(master.name) or ''
            if self.selection.wanted(app):
                by_app.setdefault(app, []).append(master)
        kept, self.left_out = self.selection.bound(by_app, self._reported)
        self._reported = kept
        self.scans = self.table.scans
        return [master for app in kept for master in by_app[app]]


@dataclass(frozen=True)
class FoundApp:
    """One application as diagnose shows it."""

    app: str
    masters: tuple[int, ...]
    named_by: tuple[str, ...]  # the rules that named its masters (AppName.source)
    reported: bool  # False: excluded by include/exclude or past max_apps


def list_apps(procfs: ProcFS, log: logging.Logger | logging.LoggerAdapter, selection: AppSelection) -> list[FoundApp]:
    """Every application on the host as one run of a node-wide instance would find and name it."""
    table = ProcessTable(procfs, log, clock=lambda: 0.0)
    found = table.masters(Sightings())
    masters: dict[str, list[tuple[Master, AppName]]] = {}
    for master, name in found:
        masters.setdefault(base_name(master.name) or '', []).append((master, name))
    kept, _ = selection.bound([app for app in masters if selection.wanted(app)])
    return [
        FoundApp(
            app,
            tuple(sorted(m.stat.pid for m, _ in pairs)),
            tuple(dict.fromkeys(n.source for _, n in pairs)),
            app in kept,
        )
        for app, pairs in sorted(masters.items())
    ]
