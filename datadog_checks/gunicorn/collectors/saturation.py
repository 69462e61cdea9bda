"""How saturated the app is: connections waiting in its accept queues, requests in flight in its workers, and the
working/idle split those give sync workers.

A sync worker serves one connection from accept() to close(), so a connection it holds is a request it is inside,
whether it computes or waits on I/O - which the CPU window alone cannot see. Threaded and event-loop workers hold
many connections (gthread keeps idle keep-alive connections too), so for them in-flight is reported on its own and
the split stays the CPU window's. See classify.worker_model for how the class is told.

Collaborators, one job each: listeners.ListenerFinder (which sockets are the app's), sockets.tables.SocketTables
(their figures this run), fds.FdReader (what a process holds open), working (the pure rules).

From the control socket (Gunicorn 25.1+), when the check reaches it: `collect(announced=...)` takes the addresses of
`show listeners` per master pid, and `worker_class`/`threads` come from `show config` (see `control_socket_hints`);
both are optional and exact when given.

Several collectors (one per group of a node-wide instance) share one inet_diag dump per run when given one
`SharedTcpDump`: each is told its masters first (`prepare`), so that the dump knows every port before it is made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..configuration import BindAddress, parse_bind
from ..sources.control_socket.monitor import Health
from ..sources.procfs import ProcError, ProcessAccessDenied, ProcessGone, ProcessKey, ProcFS
from ..sources.sockets.rows import ListenerStats, SocketTableError
from ..sources.sockets.shared_dump import SharedTcpDump
from ..sources.sockets.tables import SocketTables
from .discovery import AppTree
from .fds import FdReader
from .listeners import SOURCE_BIND, SOURCE_SOCKETS, AppListeners, ListenerFinder
from .working import WorkerCounts, WorkerModel, combine_working, worker_model


@dataclass(frozen=True)
class SaturationReport:
    listeners: tuple[ListenerStats, ...]
    workers: WorkerCounts  # the split to report: the CPU window's, completed by in-flight requests for sync workers
    model: WorkerModel
    in_flight: int | None  # summed over the listeners; None unless every master's listeners were read
    problems: tuple[str, ...] = ()  # what the user configured and does not work, for a warning


@dataclass
class SaturationCollector:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    bind: Sequence[str] = ()
    shared: SharedTcpDump | None = None  # the TCP dump of each run, shared with other collectors
    fds: FdReader = field(init=False)
    finder: ListenerFinder = field(init=False)
    tables: SocketTables = field(init=False)
    _missing: set[BindAddress] = field(default_factory=set)
    _prepared: dict[ProcessKey, AppListeners | None] = field(default_factory=dict)  # this run's, from prepare()
    _told_denied: bool = False

    def __post_init__(self) -> None:
        self.fds = FdReader(self.procfs, self.log)
        configured = tuple(dict.fromkeys(parse_bind(text) for text in self.bind))
        self.tables = SocketTables(self.procfs, self.log, shared=self.shared)
        self.finder = ListenerFinder(self.tables, self.log, self.fds, configured)

    def prepare(self, trees: list[AppTree], announced: Mapping[int, Sequence[str]] | None = None) -> None:
        """The first pass of a run whose TCP dump is shared: find the listeners of every master in `trees` and tell
        the shared dump their ports. `collect` then uses them; without this pass it finds them itself."""
        self._prepared = {}
        for tree in trees:
            listeners = self.finder.find(tree, None if announced is None else announced.get(tree.master.pid))
            self._prepared[tree.master.key] = listeners
            if listeners is not None:
                self.tables.expect(tree.master, listeners.addresses)

    def collect(
        self,
        trees: list[AppTree],
        cpu: WorkerCounts,
        announced: Mapping[int, Sequence[str]] | None = None,
        worker_class: str | None = None,
        threads: int | None = None,
    ) -> SaturationReport:
        """Listener figures for every master in `trees`, and the worker split given the CPU window's `cpu`."""
        found: dict[tuple[str, tuple[int, ...]], ListenerStats] = {}
        complete = bool(trees)
        missing: set[BindAddress] = set()
        for tree in trees:
            stats, tree_missing = self._read(tree, None if announced is None else announced.get(tree.master.pid))
            if stats is None or tree_missing:
                complete = False
            missing |= tree_missing
            for s in stats or ():
                found[(s.address, s.listen_inodes)] = s
        # Configured addresses without a listener: told once each, until they have one again.
        problems = [
            'No listening socket at %s (from the `bind` option) in the network namespace of the Gunicorn master: '
            'listen.* and in-flight metrics are not sent for it. Is it an address Gunicorn binds to?' % address
            for address in sorted(missing - self._missing, key=str)
        ]
        self._missing = missing
        listeners = tuple(found.values())
        in_flight = sum(s.in_flight for s in listeners) if complete and listeners else None

        workers = [w for t in trees for w in t.workers]
        event_loop = bool(self.fds.event_loop) and any(w.key in self.fds.event_loop for w in workers)
        model = worker_model(worker_class, threads, [w.num_threads for w in workers], event_loop)
        split = cpu
        if model is WorkerModel.SYNC and in_flight is not None:
            accepted = frozenset().union(*(s.accepted_inodes for s in listeners))
            split = combine_working(cpu, in_flight, self._working_without_connection(trees, cpu, in_flight, accepted))

        self._prepared = {}
        masters = [t.master.key for t in trees]
        self.finder.prune(masters)
        self.tables.prune(masters)
        self.fds.prune(w.key for w in workers)  # a generator: nothing is built while no event loop was seen
        return SaturationReport(listeners, split, model, in_flight, tuple(problems))

    def close(self) -> None:
        self.tables.close()

    def _read(
        self, tree: AppTree, announced: Sequence[str] | None
    ) -> tuple[list[ListenerStats] | None, set[BindAddress]]:
        """The figures of one master's listeners (None when unknown) and the configured addresses without one."""
        key = tree.master.key
        listeners = self._prepared[key] if key in self._prepared else self.finder.find(tree, announced)
        if listeners is None:
            return None, set()
        master = tree.master
        try:
            stats, missing = self.tables.queues(master, listeners.addresses)
        except ProcessGone:
            return None, set()  # exited since discovery: the next run finds out
        except ProcessAccessDenied as exc:
            if not self._told_denied:
                self._told_denied = True
                self.log.debug('Cannot read the socket tables of master %s (hidepid?): %s', master.pid, exc)
            return None, set()
        except (ProcError, SocketTableError) as exc:
            self.log.debug('Cannot read the socket tables of master %s: %s', master.pid, exc)
            return None, set()
        if missing and listeners.source != SOURCE_BIND:
            self.log.debug(
                'Master %s has no listening socket at %s (from %s)',
                master.pid,
                ', '.join(map(str, missing)),
                listeners.source,
            )
            if listeners.source == SOURCE_SOCKETS:
                self.finder.forget(master.key)  # rebound, or closed: look at its sockets again
            return None, set()
        return stats, set(missing)

    def _working_without_connection(
        self, trees: list[AppTree], cpu: WorkerCounts, in_flight: int, accepted: frozenset[int]
    ) -> int | None:
        """How many CPU-working workers hold no accepted connection, when that can change the split and be read.

        With no CPU-working worker, or no connection, or when either signal alone already covers every worker, the
        larger signal is exact and no fd is read: in steady state this reads nothing.
        """
        if not cpu.working or not in_flight or max(cpu.working, in_flight) >= cpu.total or self.fds.denied:
            return None
        by_pid = {w.pid: w for t in trees for w in t.workers}
        without = 0
        for pid in cpu.working_pids:
            worker = by_pid.get(pid)
            held = None if worker is None else self.fds.sockets(worker)
            if held is None:
                return None  # gone or unreadable: fall back to the bound
            if not held & accepted:
                without += 1
        return without


def control_socket_hints(
    found: list[tuple[ProcessKey, Health]],
) -> tuple[dict[int, list[str]], str | None, int | None]:
    """What the control socket tells the saturation collector: listeners per master pid, worker class, threads.

    With --reuse-port the master holds no listener and `show listeners` is empty: the configured binds name the
    address every worker's socket listens on.
    """
    announced = {key.pid: list(h.listeners or h.config.bind) for key, h in found if h.listeners or h.config.bind}
    config = next((h.config for _, h in found if h.config.worker_class), None)
    return announced, config and config.worker_class, config and config.threads
