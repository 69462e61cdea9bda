"""Finding an application's Gunicorn masters and the processes under them, cheaply across runs.

A full walk of the process table is the expensive part of watching Gunicorn (tens of milliseconds on a busy host),
so it happens only when a remembered master is gone, when none is known, and every `RESCAN_SECONDS` to notice a
second master started beside a known one. Between walks a master is verified by its pid and start time, and its
children come from `/proc/MASTER/task/*/children`, which the kernel keeps for us.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .classify import Role, Title, belongs_to, is_master_of, parse_title
from .procfs import ProcError, ProcessAccessDenied, ProcessGone, ProcessKey, ProcFS, ProcUnsupported, Stat

# A master titled this way shows setproctitle's 15-character comm, which lets a walk skip everything else
# without reading the (costlier) command line of every process.
MASTER_COMM_PREFIX = 'gunicorn: maste'
RESCAN_SECONDS = 300.0


@dataclass
class AppTree:
    """One master of the application and what runs under it.

    `upgrade_masters` are new masters started by USR2 (`NAME.2`) that still run under this one; their workers are
    in `workers` because they already serve the application's traffic.
    """

    master: Stat
    workers: list[Stat] = field(default_factory=list)
    upgrade_masters: list[Stat] = field(default_factory=list)
    dirty_arbiters: list[Stat] = field(default_factory=list)
    dirty_workers: list[Stat] = field(default_factory=list)


@dataclass
class Discovery:
    """The application's process trees, found by title, remembered by (pid, start time) between runs."""

    procfs: ProcFS
    app: str
    log: logging.Logger | logging.LoggerAdapter
    clock: Callable[[], float] = time.monotonic
    scans: int = 0
    denied: int = 0  # processes the last walk could not read
    _masters: dict[int, ProcessKey] = field(default_factory=dict)
    _titles: dict[ProcessKey, Title | None] = field(default_factory=dict)
    _last_scan: float | None = None
    _children_supported: bool = True
    _master_names: dict[int, str | None] = field(default_factory=dict)

    def trees(self) -> list[AppTree]:
        masters = None if self._rescan_due() else self._verify_known()
        if not masters:
            masters = self._scan()
        trees = [self._tree(m) for m in masters]
        self._forget_titles_except(trees)
        return trees

    # Masters

    def _rescan_due(self) -> bool:
        return self._last_scan is None or self.clock() - self._last_scan >= RESCAN_SECONDS

    def _verify_known(self) -> list[Stat]:
        alive = []
        for key in list(self._masters.values()):
            stat = self._master_stat(key.pid)
            if stat is None or stat.key != key:
                self.log.debug('Gunicorn master %s of %s is gone; walking the process table again', key.pid, self.app)
                return []
            alive.append(stat)
        return alive

    def _master_stat(self, pid: int) -> Stat | None:
        try:
            stat = self.procfs.read_stat(pid)
            title = parse_title(self.procfs.read_title(pid))
        except ProcError as exc:
            self.log.debug('Cannot read candidate master %s: %s', pid, exc)
            return None
        if stat.state == 'Z' or not is_master_of(title, self.app):
            return None
        self._master_names[pid] = title.name
        return stat

    def _scan(self) -> list[Stat]:
        self.scans += 1
        self._last_scan = self.clock()
        self.denied = 0
        found = []
        for pid in self.procfs.pids():
            try:
                if not self.procfs.read_comm(pid).startswith(MASTER_COMM_PREFIX):
                    continue
            except ProcessGone:
                continue
            except ProcessAccessDenied:
                self.denied += 1
                continue
            stat = self._master_stat(pid)
            if stat is not None:
                found.append(stat)
        # A master under another one is a USR2 upgrade, which belongs to its parent's tree, or a fork that has not
        # set its own title yet: either way counting it as a master of its own would count workers twice.
        pids = {s.pid for s in found}
        found = [s for s in found if s.ppid not in pids]
        self._masters = {s.pid: s.key for s in found}
        self._master_names = {pid: name for pid, name in self._master_names.items() if pid in self._masters}
        self.log.debug('Found %d Gunicorn master(s) named %r: %s', len(found), self.app, sorted(self._masters))
        return found

    # Trees

    def _tree(self, master: Stat) -> AppTree:
        tree = AppTree(master)
        master_name = self._master_names.get(master.pid)
        for child, title in self._titled_children(master.pid):
            if title is None:
                continue
            if title.role is Role.WORKER and belongs_to(title, self.app):
                tree.workers.append(child)
            elif title.role is Role.MASTER and belongs_to(title, self.app) and title.name != master_name:
                # A different name under a master is a USR2 upgrade (`NAME.2`); the same name is a fork that
                # has not set its worker title yet.
                tree.upgrade_masters.append(child)
                for grandchild, sub in self._titled_children(child.pid):
                    if sub is not None and sub.role is Role.WORKER and belongs_to(sub, self.app):
                        tree.workers.append(grandchild)
                    elif sub is not None and sub.role is Role.DIRTY_ARBITER:
                        self._add_dirty(tree, grandchild)
            elif title.role is Role.DIRTY_ARBITER:
                self._add_dirty(tree, child)
        return tree

    def _add_dirty(self, tree: AppTree, arbiter: Stat) -> None:
        tree.dirty_arbiters.append(arbiter)
        for child, title in self._titled_children(arbiter.pid):
            if title is not None and title.role is Role.DIRTY_WORKER:
                tree.dirty_workers.append(child)

    def _titled_children(self, parent: int) -> Iterable[tuple[Stat, Title | None]]:
        for stat in self._children(parent):
            yield stat, self._title(stat)

    def _children(self, parent: int) -> list[Stat]:
        pids: Iterable[int]
        if self._children_supported:
            try:
                pids = self.procfs.read_children(parent)
            except ProcUnsupported:
                self.log.debug('No /proc/PID/task/*/children on this kernel; finding children by walking the table')
                self._children_supported = False
            except ProcError as exc:
                self.log.debug('Cannot list children of %s: %s', parent, exc)
                return []
        if not self._children_supported:
            pids = self.procfs.pids()
        children = []
        for pid in pids:
            try:
                stat = self.procfs.read_stat(pid)
            except ProcError:
                continue  # exited since it was listed, or unreadable: not ours to count
            # The children list is built without a lock and pids are reused: keep only live children of `parent`.
            if stat.ppid == parent and stat.state != 'Z':
                children.append(stat)
        return children

    def _title(self, stat: Stat) -> Title | None:
        if stat.key in self._titles:
            return self._titles[stat.key]
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

    def _forget_titles_except(self, trees: list[AppTree]) -> None:
        live = {s.key for t in trees for s in (*t.workers, *t.upgrade_masters, *t.dirty_arbiters, *t.dirty_workers)}
        for key in [k for k in self._titles if k not in live]:
            del self._titles[key]
