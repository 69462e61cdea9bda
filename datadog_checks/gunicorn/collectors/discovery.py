"""Finding an application's Gunicorn masters and the processes under them, cheaply across runs.

A master is found three ways:
- by title: setproctitle makes it `gunicorn: master [NAME]`, and its 15-character comm `gunicorn: maste` lets a walk
  of the process table skip every other process without reading its command line;
- by command line, when no master has that title: without setproctitle (and on every platform where titles never
  change), and while a master is still importing the application (`--preload`), master and workers show the raw
  command that started them. The walk then reads the command lines of the few processes whose comm is `gunicorn`
  or a Python interpreter, and the master is the one whose parent does not run the same command;
- by pid file (`pid_file`): the pid Gunicorn wrote, checked by `pidfile.PidFiles`.

A full walk of the process table is the expensive part of watching Gunicorn (tens of milliseconds on a busy host),
so it happens only when a remembered master is gone, when none is known, and every `RESCAN_SECONDS` to notice a
second master started beside a known one. Between walks a master is verified by its pid and start time, and its
children come from `/proc/MASTER/task/*/children`, which the kernel keeps for us.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..sources.cmdline import PROGRAMS, GunicornCommand, parse_gunicorn
from ..sources.pidfile import UPGRADE_SUFFIX, PidFileError, PidFiles
from ..sources.procfs import ProcError, ProcessAccessDenied, ProcessGone, ProcessKey, ProcFS, ProcUnsupported, Stat
from ..sources.titles import Role, Title, base_name, belongs_to, is_master_of, parse_title

# A master titled this way shows setproctitle's 15-character comm, which lets a walk skip everything else
# without reading the (costlier) command line of every process.
MASTER_COMM_PREFIX = 'gunicorn: maste'
RESCAN_SECONDS = 300.0
# The comm of an untitled Gunicorn process: the name of the script the kernel ran (`gunicorn`, from its shebang), or
# the interpreter's (`python3.12`, for `python -m gunicorn` and for a master re-executed by USR2 through
# sys.executable). Only these processes have their command lines read when no titled master matches.
_INTERPRETER_COMM = re.compile(r'(?:python|pypy)[0-9.]*\Z')


def may_run_gunicorn(comm: str) -> bool:
    return comm in PROGRAMS or bool(_INTERPRETER_COMM.match(comm))


@dataclass(frozen=True)
class Master:
    """A master as found: its stat, its name, and its raw command when it shows no title."""

    stat: Stat
    name: str | None
    command: GunicornCommand | None = None

    @property
    def titled(self) -> bool:
        return self.command is None


@dataclass
class AppTree:
    """One master of the application and what runs under it.

    `upgrade_masters` are new masters started by USR2 (`NAME.2`) that still run under this one; their workers are
    in `workers` because they already serve the application's traffic. `titled` is False when the master was found
    from its raw command line.
    """

    master: Stat
    workers: list[Stat] = field(default_factory=list)
    upgrade_masters: list[Stat] = field(default_factory=list)
    dirty_arbiters: list[Stat] = field(default_factory=list)
    dirty_workers: list[Stat] = field(default_factory=list)
    name: str | None = None
    titled: bool = True

    @property
    def app(self) -> str | None:
        return base_name(self.name)

    @property
    def starting(self) -> bool:
        """An untitled master without workers: still loading (`--preload` imports the app before any fork)."""
        return not self.titled and not self.workers and not self.upgrade_masters

    @property
    def titles_missing(self) -> bool:
        """Master and workers run with raw command lines: setproctitle is not installed (or cannot work)."""
        return not self.titled and bool(self.workers)


@dataclass
class Sightings:
    """What the last walk of the process table saw, to explain why a name matched nothing."""

    titled: dict[str, list[int]] = field(default_factory=dict)  # master title name -> pids, every application
    untitled: dict[str, list[int]] = field(default_factory=dict)  # command-line name -> master pids
    untitled_examined: bool = False  # whether command lines were read at all in that walk
    denied: int = 0
    processes: int = 0
    unreadable_root: str | None = None  # why the proc root itself could not be listed


def walk(
    procfs: ProcFS,
    log: logging.Logger | logging.LoggerAdapter,
    wanted: Callable[[str | None], bool],
    untitled: str = 'fallback',
) -> tuple[list[Master], Sightings]:
    """Every Gunicorn master in the process table whose name satisfies `wanted`, top-level ones only.

    `untitled='fallback'` reads command lines only when no titled master is wanted (the check's steady state never
    pays for it); `'always'` reads them in any case (diagnosis); `'never'` skips them.
    """
    seen = Sightings()
    titled: list[Master] = []
    candidates: list[int] = []
    try:
        pids = procfs.pids()
    except OSError as exc:
        # A wrong procfs_path (say /host/proc without the mount), or a platform without /proc (macOS).
        seen.unreadable_root = '%s: %s' % (procfs.root, exc.strerror or exc)
        pids = []
    for pid in pids:
        seen.processes += 1
        try:
            comm = procfs.read_comm(pid)
        except ProcessGone:
            continue
        except ProcessAccessDenied:
            seen.denied += 1
            continue
        if comm.startswith(MASTER_COMM_PREFIX):
            master = _titled_master(procfs, log, pid)
            if master is not None:
                seen.titled.setdefault(master.name or '', []).append(pid)
                if wanted(master.name):
                    titled.append(master)
        elif may_run_gunicorn(comm):
            candidates.append(pid)
    found = titled
    if untitled == 'always' or (untitled == 'fallback' and not titled):
        seen.untitled_examined = True
        for master in _untitled_masters(procfs, seen, candidates):
            seen.untitled.setdefault(master.name or '', []).append(master.stat.pid)
            if wanted(master.name):
                found.append(master)
    return top_level(found), seen


def _titled_master(procfs: ProcFS, log, pid: int) -> Master | None:
    try:
        stat = procfs.read_stat(pid)
        title = parse_title(procfs.read_title(pid))
    except ProcError as exc:
        log.debug('Cannot read candidate master %s: %s', pid, exc)
        return None
    if stat.state == 'Z' or title is None or title.role is not Role.MASTER:
        return None
    return Master(stat, title.name)


def _untitled_masters(procfs: ProcFS, seen: Sightings, pids: Iterable[int]) -> list[Master]:
    commands: dict[int, tuple[Stat, GunicornCommand]] = {}
    for pid in pids:
        try:
            stat = procfs.read_stat(pid)
            argv = procfs.read_cmdline(pid)
        except ProcessGone:
            continue
        except ProcessAccessDenied:
            seen.denied += 1
            continue
        command = parse_gunicorn(argv)
        if command is not None and stat.state != 'Z':
            commands[pid] = (stat, command)
    # Workers (and a master re-executed by USR2) run the same command as their parent; the master's parent does not.
    return [
        Master(stat, command.proc_name, command)
        for stat, command in commands.values()
        if stat.ppid not in commands or commands[stat.ppid][1].args != command.args
    ]


def top_level(masters: list[Master]) -> list[Master]:
    """Masters that do not run under another one found with them.

    A master under another one is a USR2 upgrade, which belongs to its parent's tree, or a fork that has not set its
    own title yet: either way counting it as a master of its own would count workers twice.
    """
    pids = {m.stat.pid for m in masters}
    return [m for m in masters if m.stat.ppid not in pids]


@dataclass
class Discovery:
    """The application's process trees, found by pid file, title or command line, remembered between runs."""

    procfs: ProcFS
    app: str | None
    log: logging.Logger | logging.LoggerAdapter
    pid_file: str | None = None
    clock: Callable[[], float] = time.monotonic
    scans: int = 0
    sightings: Sightings = field(default_factory=Sightings)
    pid_file_problem: PidFileError | None = None  # why the pid file named no master in the last run
    _pid_files: PidFiles | None = None
    _masters: dict[int, Master] = field(default_factory=dict)
    _upgrade_pids: set[int] = field(default_factory=set)
    _titles: dict[ProcessKey, Title] = field(default_factory=dict)  # final titles only
    _same_command: dict[ProcessKey, bool] = field(default_factory=dict)
    _last_scan: float | None = None
    _children_supported: bool = True

    def __post_init__(self):
        if self.pid_file:
            self._pid_files = PidFiles(self.procfs, self.pid_file, self.log, expected_name=self.app)

    @property
    def denied(self) -> int:
        """Processes the last walk could not read."""
        return self.sightings.denied

    def trees(self) -> list[AppTree]:
        trees = [self.tree(m) for m in self._current_masters()]
        self._forget_except(trees)
        return trees

    # Masters

    def _current_masters(self) -> list[Master]:
        self.pid_file_problem = None
        if self._pid_files is not None:
            result = self._pid_files.masters()
            self.pid_file_problem = result.problem
            if result.masters:
                self._upgrade_pids = {m.stat.pid for m in result.masters if m.path.endswith(UPGRADE_SUFFIX)}
                return top_level([Master(m.stat, m.name, m.command) for m in result.masters])
            if not self.app:
                return []
        masters = None if self._rescan_due() else self._verify_known()
        if not masters:
            masters = self._scan()
        return masters

    def _rescan_due(self) -> bool:
        return self._last_scan is None or self.clock() - self._last_scan >= RESCAN_SECONDS

    def _verify_known(self) -> list[Master]:
        alive = []
        for known in list(self._masters.values()):
            master = self._recheck(known)
            if master is None:
                self.log.debug(
                    'Gunicorn master %s of %s is gone; walking the process table again', known.stat.pid, self.app
                )
                return []
            alive.append(master)
        self._masters = {m.stat.pid: m for m in alive}
        return alive

    def _recheck(self, known: Master) -> Master | None:
        try:
            stat = self.procfs.read_stat(known.stat.pid)
            title = parse_title(self.procfs.read_title(known.stat.pid))
        except ProcError as exc:
            self.log.debug('Cannot read master %s: %s', known.stat.pid, exc)
            return None
        if stat.key != known.stat.key or stat.state == 'Z':
            return None
        if is_master_of(title, self.app):
            # Also the moment a master found by its command line sets its title, at the end of `--preload`.
            return Master(stat, title.name)
        if title is None and known.command is not None:
            return Master(stat, known.name, known.command)
        return None

    def _scan(self) -> list[Master]:
        self.scans += 1
        self._last_scan = self.clock()
        app = self.app
        found, self.sightings = walk(self.procfs, self.log, lambda name: name == app or base_name(name) == app)
        self._masters = {m.stat.pid: m for m in found}
        self.log.debug('Found %d Gunicorn master(s) named %r: %s', len(found), app, sorted(self._masters))
        return found

    # Trees

    def tree(self, master: Master) -> AppTree:
        """The processes under `master`: its workers, upgrade masters and dirty processes."""
        if master.command is not None:
            return self._untitled_tree(master, master.command)
        tree = AppTree(master.stat, name=master.name)
        app = base_name(master.name) or ''
        for child, title in self._titled_children(master.stat):
            if title is None:
                continue
            if title.role is Role.WORKER and belongs_to(title, app):
                tree.workers.append(child)
            elif title.role is Role.MASTER and belongs_to(title, app) and title.name != master.name:
                # A different name under a master is a USR2 upgrade (`NAME.2`); the same name is a fork that
                # has not set its worker title yet.
                tree.upgrade_masters.append(child)
                for grandchild, sub in self._titled_children(child):
                    if sub is not None and sub.role is Role.WORKER and belongs_to(sub, app):
                        tree.workers.append(grandchild)
                    elif sub is not None and sub.role is Role.DIRTY_ARBITER:
                        self._add_dirty(tree, grandchild)
            elif title.role is Role.DIRTY_ARBITER:
                self._add_dirty(tree, child)
        return tree

    def _untitled_tree(self, master: Master, command: GunicornCommand) -> AppTree:
        """Without titles every process of the server shows the master's command: tell them apart by shape.

        - A child that runs another command is not Gunicorn's (a subprocess of the application).
        - A child whose comm differs from the master's was re-executed: the new master of a USR2 upgrade (the master
          runs `sys.executable`, whose name the kernel puts in comm, where the first master showed `gunicorn`). A
          child named by the `.2` pid file is one too.
        - A child with children running the same command is a dirty arbiter when the command line declares dirty
          apps, else an upgrade master. Children's children are only listed when the cheap signals cannot decide:
          dirty apps declared, or a master whose comm is already the interpreter's (`python -m gunicorn`, or a
          master promoted by an earlier USR2), whose re-executed child would show the same comm.
        - Any other child is a worker.
        """
        tree = AppTree(master.stat, name=master.name, titled=False)
        comm_tells = not _INTERPRETER_COMM.match(master.stat.comm)
        for child in self._children(master.stat):
            if not self._runs(child, command):
                continue
            if child.comm != master.stat.comm or child.pid in self._upgrade_pids:
                self._add_untitled_upgrade(tree, child, command)
            elif command.declares_dirty_apps or not comm_tells:
                below = [c for c in self._children(child) if self._runs(c, command)]
                if not below:
                    tree.workers.append(child)
                elif command.declares_dirty_apps:
                    tree.dirty_arbiters.append(child)
                    tree.dirty_workers.extend(below)
                else:
                    tree.upgrade_masters.append(child)
                    tree.workers.extend(below)
            else:
                tree.workers.append(child)
        return tree

    def _add_untitled_upgrade(self, tree: AppTree, child: Stat, command: GunicornCommand) -> None:
        tree.upgrade_masters.append(child)
        tree.workers.extend(c for c in self._children(child) if self._runs(c, command))

    def _runs(self, stat: Stat, command: GunicornCommand) -> bool:
        """Whether `stat`'s process runs `command` (a fork or re-execution of the same server); cached per process."""
        if stat.key not in self._same_command:
            try:
                other = parse_gunicorn(self.procfs.read_cmdline(stat.pid))
            except ProcError as exc:
                self.log.debug('Cannot read the command line of %s: %s', stat.pid, exc)
                return False
            self._same_command[stat.key] = other is not None and other.args == command.args
        return self._same_command[stat.key]

    def _add_dirty(self, tree: AppTree, arbiter: Stat) -> None:
        tree.dirty_arbiters.append(arbiter)
        for child, title in self._titled_children(arbiter):
            if title is not None and title.role is Role.DIRTY_WORKER:
                tree.dirty_workers.append(child)

    def _titled_children(self, parent: Stat) -> list[tuple[Stat, Title | None]]:
        # The cache is looked up here first: every worker's title comes from it on every run but its first.
        titles = self._titles
        return [(stat, titles.get(stat.key) or self._title(stat)) for stat in self._children(parent)]

    def _children(self, parent: Stat) -> list[Stat]:
        pids: Iterable[int]
        if self._children_supported:
            try:
                pids = self.procfs.read_children(parent.pid, parent.num_threads)
            except ProcUnsupported:
                self.log.debug('No /proc/PID/task/*/children on this kernel; finding children by walking the table')
                self._children_supported = False
            except ProcError as exc:
                self.log.debug('Cannot list children of %s: %s', parent.pid, exc)
                return []
        if not self._children_supported:
            pids = self.procfs.pids()
        # Those missing from the result exited since they were listed, or are unreadable: not ours to count. The
        # children list is built without a lock and pids are reused: keep only live children of `parent`.
        return [stat for stat in self.procfs.read_stats(pids).values() if stat.ppid == parent.pid and stat.state != 'Z']

    def _title(self, stat: Stat) -> Title | None:
        title = self._titles.get(stat.key)
        if title is not None:
            return title
        try:
            title = parse_title(self.procfs.read_title(stat.pid))
        except ProcError as exc:
            self.log.debug('Cannot read the title of %s: %s', stat.pid, exc)
            return None
        # A fresh fork shows its parent's master title until it sets its own, and an upgrade master renames itself
        # when promoted: only worker and dirty titles are final.
        if title is not None and title.role is not Role.MASTER:
            self._titles[stat.key] = title
        return title

    def _forget_except(self, trees: list[AppTree]) -> None:
        live = {s.key for t in trees for s in (*t.workers, *t.upgrade_masters, *t.dirty_arbiters, *t.dirty_workers)}
        for cache in (self._titles, self._same_command):
            for key in [k for k in cache if k not in live]:
                del cache[key]
