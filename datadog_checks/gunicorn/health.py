"""Worker health from a master's control socket (Gunicorn 25.1+): target, churn counters, heartbeats, configuration.

One short connection per master per run, closed before the check's CPU sample window: on Python 3.12+ Gunicorn's
master cannot stop its control thread for a fork while a client is connected, so a lingering connection would slow
the server it watches. Server bugs worked around (27.0.1): `booted` is always false (ignored), `show dirty` never
lists workers (`show all` is used), the socket file vanishes after a USR2 promotion until the next fork (absence is
not an error for a socket found before), and instances sharing the default path steal it (every socket is accepted
only after `show stats` names the master's pid).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from . import control_socket as ctl
from .procfs import ProcError, ProcessKey, ProcFS, Stat


@dataclass(frozen=True)
class Health:
    path: str
    stats: ctl.Stats
    config: ctl.Config
    web_heartbeat_ages: tuple[float, ...]
    dirty_heartbeat_ages: tuple[float, ...] | None  # None when the app has no dirty workers or they were not read
    listeners: tuple[ctl.Listener, ...] = ()  # `show listeners`; empty when it was not answered

    @property
    def dirty_configured(self) -> bool:
        return bool(self.config.dirty_workers or self.config.dirty_apps) or self.stats.dirty_arbiter_pid is not None


class Churn(NamedTuple):
    spawned: int
    killed: int
    reloads: int


def _heartbeat_ages(entries: tuple[ctl.WorkerHeartbeat, ...], uptime: float | None) -> tuple[float, ...]:
    """Ages that can be true: a worker just forked can report a heartbeat computed against another clock (the chaos
    soak saw -299,260,051 s), and no worker's heartbeat is older than its master."""
    limit = uptime if uptime is not None else float('inf')
    ages = (e.last_heartbeat_seconds for e in entries)
    return tuple(a for a in ages if a is not None and 0 <= a <= limit)


@dataclass
class ControlSocketMonitor:
    """Reads each master's control socket and turns its cumulative counters into per-run deltas."""

    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    configured_path: str | None = None
    timeout: float = ctl.DEFAULT_TIMEOUT_SECONDS
    _paths: dict[ProcessKey, str] = field(default_factory=dict)
    _counters: dict[ProcessKey, Churn] = field(default_factory=dict)
    _configs: dict[ProcessKey, tuple[int, ctl.Config]] = field(default_factory=dict)  # by the reloads they came with
    _absent_logged: set[ProcessKey] = field(default_factory=set)
    # `show listeners` per master with the reload count it was asked at: binds change only on a reload (HUP).
    _listeners: dict[ProcessKey, tuple[int | None, tuple[ctl.Listener, ...]]] = field(default_factory=dict)

    def read(self, master: Stat) -> Health | None:
        """The master's health, or None when it has no reachable socket and none was configured.

        A configured path that fails raises ControlSocketError: the user asked for it, so the check warns.
        """
        candidates = self._candidates(master)
        if not candidates:
            return None
        try:
            client, stats = ctl.connect_verified(candidates, master.pid, self.timeout)
        except ctl.ControlSocketError as exc:
            # Forget a socket that worked before (after a USR2 promotion the old master deletes the new one's
            # socket until its next fork): the next run looks at every candidate again.
            self._paths.pop(master.key, None)
            if self.configured_path:
                raise
            if master.key not in self._absent_logged:
                self._absent_logged.add(master.key)
                self.log.debug(
                    'No control socket for Gunicorn master %s, so no control-socket metrics (Gunicorn 25.1+ runs '
                    'one by default; older versions have none): %s',
                    master.pid,
                    exc,
                )
            return None
        self._paths[master.key] = client.path
        self._absent_logged.discard(master.key)
        with client:
            config = self._config(client, master, stats)
            web = self._optional(client.show_workers, master) or ()
            dirty = None
            # `show all` waits on the dirty arbiter (up to 2 s): ask only when there is one, with what time is left.
            if stats.dirty_arbiter_pid is not None:
                everything = self._optional(client.show_all, master)
                dirty = (
                    _heartbeat_ages(everything.dirty_workers, stats.uptime_seconds) if everything is not None else None
                )
            listeners = self._listeners_of(client, master, stats)
        return Health(client.path, stats, config, _heartbeat_ages(web, stats.uptime_seconds), dirty, listeners)

    def _listeners_of(
        self, client: ctl.ControlSocketClient, master: Stat, stats: ctl.Stats
    ) -> tuple[ctl.Listener, ...]:
        """`show listeners`, asked again only after a reload: one round trip less on every other run."""
        known = self._listeners.get(master.key)
        if known is not None and stats.reloads is not None and known[0] == stats.reloads:
            return known[1]
        listeners = self._optional(client.show_listeners, master)
        if listeners is None:
            self._listeners.pop(master.key, None)
            return ()
        self._listeners[master.key] = (stats.reloads, listeners)
        return listeners

    def churn(self, master: ProcessKey, stats: ctl.Stats) -> Churn | None:
        """Counter increases since the previous run of the same master; None the first time it is seen."""
        if stats.workers_spawned is None or stats.workers_killed is None or stats.reloads is None:
            return None
        now = Churn(stats.workers_spawned, stats.workers_killed, stats.reloads)
        before = self._counters.get(master)
        self._counters[master] = now
        if before is None:
            return None
        # Counters only grow within one master; a smaller value means a restart that kept the pid and start time,
        # which cannot happen, or a confused peer: report no change rather than a negative count.
        return Churn(
            max(now.spawned - before.spawned, 0),
            max(now.killed - before.killed, 0),
            max(now.reloads - before.reloads, 0),
        )

    def _config(self, client: ctl.ControlSocketClient, master: Stat, stats: ctl.Stats) -> ctl.Config:
        """`show config`, asked again only when the master has reloaded since (HUP, or `reload` on the socket).

        A master's configuration changes only when it reloads, which `reloads` counts (a USR2 upgrade is another
        master): asking once per reload instead of once per run saves a round trip and its parsing on every run
        (measured: 0.3 ms of wall time and 0.1 ms of CPU a run).
        """
        cached = self._configs.get(master.key)
        if cached is not None and stats.reloads is not None and cached[0] == stats.reloads:
            return cached[1]
        config = self._optional(client.show_config, master)
        if config is None:
            return ctl.parse_config({})
        if stats.reloads is not None:
            self._configs[master.key] = (stats.reloads, config)
        return config

    def forget_except(self, masters: set[ProcessKey]) -> None:
        for table in (self._paths, self._counters, self._configs, self._listeners):
            for key in [k for k in table if k not in masters]:
                del table[key]

    def _optional(self, query, master: Stat):
        """One more reply on the verified connection, or None: the stats already make the run worth reporting."""
        try:
            return query()
        except ctl.ControlSocketError as exc:
            self.log.debug('Control socket of master %s: %s', master.pid, exc)
            return None

    def _candidates(self, master: Stat) -> list[str]:
        if self.configured_path:
            return [self.configured_path]
        if master.key in self._paths:
            return [self._paths[master.key]]
        try:
            uid = os.stat(self.procfs.path(master.pid)).st_uid
            cmdline = self.procfs.read_cmdline(master.pid)
        except (OSError, ProcError) as exc:
            self.log.debug('Cannot read master %s to find its control socket: %s', master.pid, exc)
            return []
        try:
            cwd = os.readlink(self.procfs.path(master.pid, 'cwd'))
        except OSError:
            cwd = None  # needs ptrace-level access: the 25.1.0 default in the cwd is then not tried
        return ctl.candidate_paths(uid, cmdline, cwd, root=host_root(self.procfs.root))


def host_root(procfs_root: str) -> str:
    """Where the host's filesystem is mounted for the Agent: '' for /proc, '/host' for /host/proc."""
    parent, name = os.path.split(procfs_root.rstrip('/'))
    return '' if parent in ('', '/') or name != 'proc' else parent
