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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from ..procfs import ProcError, ProcessKey, ProcFS, Stat
from .client import DEFAULT_TIMEOUT_SECONDS, CommandFailed, ControlSocketError
from .locate import candidate_paths, verified_exchange
from .replies import Config, Listener, Stats, WorkerHeartbeat, heartbeat_ages, parse_all, parse_config, parse_listeners


@dataclass(frozen=True)
class Health:
    path: str
    stats: Stats
    config: Config
    web_heartbeat_ages: tuple[float, ...]
    dirty_heartbeat_ages: tuple[float, ...] | None  # None when the app has no dirty workers or they were not read
    listeners: tuple[Listener, ...] = ()  # `show listeners`; empty when it was not answered

    @property
    def dirty_configured(self) -> bool:
        return bool(self.config.dirty_workers or self.config.dirty_apps) or self.stats.dirty_arbiter_pid is not None


class Churn(NamedTuple):
    spawned: int
    killed: int
    reloads: int


def _heartbeat_ages(entries: tuple[WorkerHeartbeat, ...], uptime: float | None) -> tuple[float, ...]:
    return _plausible([a for e in entries if (a := e.last_heartbeat_seconds) is not None], uptime)


def _plausible(ages: Sequence[float], uptime: float | None) -> tuple[float, ...]:
    """Ages that can be true: a worker just forked can report a heartbeat computed against another clock (the chaos
    soak saw -299,260,051 s), and no worker's heartbeat is older than its master."""
    limit = uptime if uptime is not None else float('inf')
    return tuple([a for a in ages if 0 <= a <= limit])


T = TypeVar('T')


def _unless_reloaded(cached: tuple[int | None, T] | None, stats: Stats) -> T | None:
    """A reply remembered with the master's reload count, unless it reloaded since (HUP, or `reload` on the socket).

    Configuration and binds change only when a master reloads, which `reloads` counts (a USR2 upgrade is another
    master): asking once per reload instead of once per run saves a round trip and its parsing on every run
    (measured: 0.3 ms of wall time and 0.1 ms of CPU a run).
    """
    if cached is not None and stats.reloads is not None and cached[0] == stats.reloads:
        return cached[1]
    return None


@dataclass
class ControlSocketMonitor:
    """Reads each master's control socket and turns its cumulative counters into per-run deltas."""

    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    configured_path: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    _paths: dict[ProcessKey, str] = field(default_factory=dict)
    _counters: dict[ProcessKey, Churn] = field(default_factory=dict)
    _configs: dict[ProcessKey, tuple[int, Config]] = field(default_factory=dict)  # by the reloads they came with
    _absent_logged: set[ProcessKey] = field(default_factory=set)
    # `show listeners` per master with the reload count it was asked at: binds change only on a reload (HUP).
    _listeners: dict[ProcessKey, tuple[int | None, tuple[Listener, ...]]] = field(default_factory=dict)

    def read(self, master: Stat) -> Health | None:
        """The master's health, or None when it has no reachable socket and none was configured.

        A configured path that fails raises ControlSocketError: the user asked for it, so the check warns.
        """
        candidates = self._candidates(master)
        if not candidates:
            return None
        key = master.key
        # Everything whose need does not depend on this run's stats goes out with `show stats`: one round trip
        # in the steady state. Configuration and listeners are asked with it only when nothing is known yet.
        first = ['show workers']
        if key not in self._configs:
            first.append('show config')
        if self._listeners.get(key, (None,))[0] is None:
            first.append('show listeners')
        try:
            client, stats, replies = verified_exchange(candidates, master.pid, first, self.timeout)
        except ControlSocketError as exc:
            # Forget a socket that worked before (after a USR2 promotion the old master deletes the new one's
            # socket until its next fork): the next run looks at every candidate again.
            self._paths.pop(key, None)
            if self.configured_path:
                raise
            if key not in self._absent_logged:
                self._absent_logged.add(key)
                self.log.debug(
                    'No control socket for Gunicorn master %s, so no control-socket metrics (Gunicorn 25.1+ runs '
                    'one by default; older versions have none): %s',
                    master.pid,
                    exc,
                )
            return None
        self._paths[key] = client.path
        self._absent_logged.discard(key)
        with client:
            answers = self._answers(first, replies, master)
            config = _unless_reloaded(self._configs.get(key), stats)
            listeners = _unless_reloaded(self._listeners.get(key), stats)
            then = []
            if config is None and 'show config' not in answers:
                then.append('show config')
            # `show all` waits on the dirty arbiter (up to 2 s): ask only when there is one, with what time is left.
            if stats.dirty_arbiter_pid is not None:
                then.append('show all')
            if listeners is None and 'show listeners' not in answers:
                then.append('show listeners')
            if then:
                answers.update(self._answers(then, client.query_many(then), master))
        workers = answers['show workers']
        web = heartbeat_ages(workers) if workers is not None else ()
        dirty = None
        if 'show all' in answers and answers['show all'] is not None:
            dirty = _heartbeat_ages(parse_all(answers['show all']).dirty_workers, stats.uptime_seconds)
        if config is None:
            config = self._remember_config(key, stats, answers['show config'])
        if listeners is None:
            listeners = self._remember_listeners(key, stats, answers['show listeners'])
        return Health(client.path, stats, config, _plausible(web, stats.uptime_seconds), dirty, listeners)

    def _answers(self, commands: list[str], replies: Iterator[Any], master: Stat) -> dict[str, Any]:
        """Each command's reply data, None for one that failed: the stats already make the run worth reporting."""
        answers = dict.fromkeys(commands)
        try:
            for command, reply in zip(commands, replies, strict=True):
                if isinstance(reply, CommandFailed):
                    self.log.debug('Control socket of master %s: %s', master.pid, reply)
                else:
                    answers[command] = reply
        except ControlSocketError as exc:
            # The connection is closed: the replies not read yet stay None.
            self.log.debug('Control socket of master %s: %s', master.pid, exc)
        return answers

    def _remember_config(self, key: ProcessKey, stats: Stats, data: Any) -> Config:
        if data is None:
            return parse_config({})
        config = parse_config(data)
        if stats.reloads is not None:
            self._configs[key] = (stats.reloads, config)
        return config

    def _remember_listeners(self, key: ProcessKey, stats: Stats, data: Any) -> tuple[Listener, ...]:
        if data is None:
            self._listeners.pop(key, None)
            return ()
        listeners = parse_listeners(data)
        self._listeners[key] = (stats.reloads, listeners)
        return listeners

    def churn(self, master: ProcessKey, stats: Stats) -> Churn | None:
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

    def forget_except(self, masters: set[ProcessKey]) -> None:
        for table in (self._paths, self._counters, self._configs, self._listeners):
            for key in [k for k in table if k not in masters]:
                del table[key]

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
        return candidate_paths(uid, cmdline, cwd, root=self.procfs.host_root)
