"""Which listening sockets are the application's, from exact sources only.

In order of precedence:
1. the `bind` option: addresses the user wrote down;
2. the listeners Gunicorn announces on its control socket (`show listeners`, 25.1+), passed in by the caller;
3. the sockets the app's processes hold, from /proc/PID/fd (needs ptrace-level access). A listening socket is the
   app's when the master and its workers hold it (inherited across fork: the default), or, with `--reuse-port`,
   where the master holds none, when every worker that listens at all listens on its address (each worker opens
   its own socket there). The master's control socket is held by the master alone - Gunicorn closes it around
   every fork (gunicorn/ctl/server.py, os.register_at_fork) - so it is never taken for one of the app's listeners,
   and neither is a socket one worker opened for itself.
Without any of these nothing is reported: a port number alone could belong to another program.

Sockets are read once per master, then again only when its workers were all replaced (a HUP can change the binds),
when a listener vanished (`forget`) and every `REIDENTIFY_SECONDS`. In between, listeners are followed by address,
which also keeps up with the fresh sockets of workers restarted under --reuse-port without reading any fd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..configuration import BindAddress, parse_bind
from ..sources.procfs import ProcError, ProcessKey
from ..sources.sockets.rows import SocketTableError
from ..sources.sockets.tables import SocketTables
from .discovery import AppTree
from .fds import FdReader

SOURCE_BIND = 'the bind option'
SOURCE_CONTROL_SOCKET = 'the control socket'
SOURCE_SOCKETS = "the processes' sockets"
REIDENTIFY_SECONDS = 300.0
# Shared listeners: besides the master, confirm on this many workers (one would do; a second guards against a
# worker that inherited the control socket in a fork racing the control server's restart).
CONFIRMING_WORKERS = 2


@dataclass(frozen=True)
class AppListeners:
    addresses: tuple[BindAddress, ...]
    source: str  # one of the SOURCE_* strings, for messages


@dataclass
class _Identified:
    listeners: AppListeners
    workers: frozenset[ProcessKey]
    at: float


@dataclass
class ListenerFinder:
    tables: SocketTables
    log: logging.Logger | logging.LoggerAdapter
    fds: FdReader
    configured: tuple[BindAddress, ...] = ()
    clock: Callable[[], float] = time.monotonic
    _identified: dict[ProcessKey, _Identified] = field(default_factory=dict)
    _told_no_source: bool = False

    def find(self, tree: AppTree, announced: Sequence[str] | None = None) -> AppListeners | None:
        """The listeners of `tree`'s master, or None when no exact source has them (said once, at debug level)."""
        if self.configured:
            return AppListeners(self.configured, SOURCE_BIND)
        if announced is not None:
            addresses = self._parse_announced(announced)
            if addresses:
                return AppListeners(addresses, SOURCE_CONTROL_SOCKET)
        known = self._identified.get(tree.master.key)
        if known is not None and not self._stale(known, tree):
            return known.listeners
        listeners = self._from_sockets(tree)
        if listeners is None:
            self._identified.pop(tree.master.key, None)
            return None
        self._identified[tree.master.key] = _Identified(listeners, frozenset(w.key for w in tree.workers), self.clock())
        return listeners

    def forget(self, master: ProcessKey) -> None:
        """A listener of `master` has no socket any more: read its sockets again on the next run."""
        self._identified.pop(master, None)

    def prune(self, masters: Iterable[ProcessKey]) -> None:
        live = set(masters)
        self._identified = {k: v for k, v in self._identified.items() if k in live}

    def _stale(self, known: _Identified, tree: AppTree) -> bool:
        if self.clock() - known.at >= REIDENTIFY_SECONDS:
            return True
        # Every worker replaced: a HUP, which may have changed the binds. Stops at the first survivor.
        if not tree.workers or not known.workers:
            return False
        return not any(w.key in known.workers for w in tree.workers)

    def _parse_announced(self, announced: Sequence[str]) -> tuple[BindAddress, ...]:
        addresses = []
        for text in announced:
            try:
                addresses.append(parse_bind(text))
            except ValueError as exc:
                self.log.debug('Ignoring a listener the control socket announced: %s', exc)
        return tuple(dict.fromkeys(addresses))

    def _from_sockets(self, tree: AppTree) -> AppListeners | None:
        master = tree.master
        held = self.fds.sockets(master)
        if held is None:
            if not self.fds.denied:  # denied is explained once by the fd reader, with the same advice
                self._no_source('the sockets of master %s could not be read' % master.pid)
            return None
        try:
            listening = self.tables.listening(master.pid)
        except (ProcError, SocketTableError) as exc:
            self.log.debug('Cannot read the listening sockets of master %s: %s', master.pid, exc)
            return None
        # The master's own listeners include its control socket: only those its workers hold too are shared ones.
        shared = held & listening.keys()
        addresses = self._shared(tree, shared, listening) if shared else ()
        if not addresses:
            addresses = self._reuse_port(tree, listening)
        if not addresses:
            self._no_source('none of the listening sockets of master %s is held by its workers' % master.pid)
            return None
        self.log.debug('Listeners of master %s from its sockets: %s', master.pid, ', '.join(map(str, addresses)))
        return AppListeners(addresses, SOURCE_SOCKETS)

    def _shared(self, tree: AppTree, shared: set[int], listening: dict[int, BindAddress]) -> tuple[BindAddress, ...]:
        confirmed = 0
        for worker in tree.workers:
            held = self.fds.sockets(worker)
            if held is None:
                continue  # gone since discovery
            shared &= held
            confirmed += 1
            if confirmed == CONFIRMING_WORKERS:
                break
        if not confirmed:
            return ()
        return tuple(sorted({listening[inode] for inode in shared}, key=str))

    def _reuse_port(self, tree: AppTree, listening: dict[int, BindAddress]) -> tuple[BindAddress, ...]:
        per_worker = []
        for worker in tree.workers:
            held = self.fds.sockets(worker)
            if held is not None and held & listening.keys():
                per_worker.append({listening[inode] for inode in held & listening.keys()})
        if not per_worker:
            return ()
        return tuple(sorted(set.intersection(*per_worker), key=str))

    def _no_source(self, reason: str) -> None:
        if self._told_no_source:
            return
        self._told_no_source = True
        self.log.debug(
            'No listener metrics: %s. Set the `bind` option to the addresses Gunicorn binds to report the accept queue '
            'and requests in flight.',
            reason,
        )
