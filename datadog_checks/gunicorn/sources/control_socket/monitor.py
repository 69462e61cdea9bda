"""Worker health from each master's control socket (Gunicorn 25.1+): target, churn counters, heartbeats, configuration.

One short connection per master per run, closed before the check's CPU sample window: on Python 3.12+ Gunicorn's
master cannot stop its control thread for a fork while a client is connected, so a lingering connection would slow
the server it watches. Each master's socket is found and verified by locate.py and remembered by the master's pid and
start time. When it cannot be used it is looked for again, at once and then at doubling intervals up to
RELOCATE_SECONDS: Gunicorn binds it from a thread only after spawning the first workers, so a master seen while it
starts has none yet, and a master that never has one (before 25.1) costs a few looks. Server bugs worked
around (27.0.1): `booted` is always false (ignored), `show dirty` never lists workers (`show all` is used), and the
socket file vanishes after a USR2 promotion until the next fork (locate.ListenerWithoutFile says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from ..procfs import ProcError, ProcessKey, ProcFS, Stat
from .client import DEFAULT_TIMEOUT_SECONDS, CommandFailed, ControlSocketError, ProtocolError
from .locate import Candidate, candidates, identity, verified_exchange
from .replies import (
    BadReply,
    Config,
    Stats,
    dirty_heartbeat_ages,
    parse_config,
    parse_listeners,
    web_heartbeat_ages,
)

# The longest a master whose socket could not be found or verified is left before its sources are read again: the
# candidates it had are still tried on every run, which is cheap; looking again reads its fds and socket table.
RELOCATE_SECONDS = 300.0


@dataclass(frozen=True)
class Health:
    path: str
    stats: Stats
    config: Config
    web_heartbeat_ages: list[float]
    dirty_heartbeat_ages: list[float] | None  # None when the app has no dirty workers or they were not read
    listeners: tuple[str, ...] = ()  # `show listeners` addresses; empty when it was not answered
    upgrade_pid: int | None = None  # the USR2 new master that answered for this master

    @property
    def dirty_configured(self) -> bool:
        return bool(self.config.dirty_workers or self.config.dirty_apps) or self.stats.dirty_arbiter_pid is not None


class Churn(NamedTuple):
    spawned: int
    killed: int
    reloads: int


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
class _Located:
    candidates: list[Candidate] | None  # None: disabled on the master's command line
    at: float
    first: float  # when this master was first looked for
    failed: bool = False  # what was found could not be used

    def due(self, now: float) -> bool:
        """Whether to look again after a failure: each wait as long as all the looking before it, up to a limit."""
        return self.failed and now - self.at >= min(RELOCATE_SECONDS, self.at - self.first)


@dataclass
class ControlSocketMonitor:
    """Reads each master's control socket and turns its cumulative counters into per-run deltas."""

    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    configured_path: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    clock: Callable[[], float] = time.monotonic
    _located: dict[ProcessKey, _Located] = field(default_factory=dict)
    _counters: dict[ProcessKey, Churn] = field(default_factory=dict)
    _configs: dict[ProcessKey, tuple[int | None, Config]] = field(default_factory=dict)
    # `show listeners` per master with the reload count it was asked at: binds change only on a reload (HUP).
    _listeners: dict[ProcessKey, tuple[int | None, tuple[str, ...]]] = field(default_factory=dict)

    def read(self, master: Stat, upgrades: list[Stat] = ()) -> Health | None:
        """The master's health, or None when it has no control socket to read (none found, or disabled).

        Raises ControlSocketError when a socket was found but could not be used: locate.Unverified says what was
        found instead (another master, another owner, a file that is no socket), and a reply that broke the
        protocol is a ProtocolError. The caller decides what the user is told.
        """
        key = master.key
        located = self._locate(master)
        if not located.candidates:
            # Nothing tied to it yet (a master binds its socket after its first workers): look again, ever less often.
            located.failed = located.candidates is not None
            return None
        # Everything whose need does not depend on this run's stats goes out with `show stats`: one round trip
        # in the steady state. Configuration and listeners are asked with it only when nothing is known yet.
        first = ['show workers']
        if key not in self._configs:
            first.append('show config')
        if self._listeners.get(key, (None,))[0] is None:
            first.append('show listeners')
        try:
            who = identity(self.procfs, master, upgrades)
            verified = verified_exchange(self.procfs, located.candidates, who, first, self.timeout)
        except ProcError as exc:
            self.log.debug('Cannot read master %s to verify its control socket: %s', master.pid, exc)
            return None
        except ControlSocketError:
            located.failed = True
            raise
        # The one that answered is tried first from now on; the others stay for when it stops answering.
        located.failed = False
        located.candidates.remove(verified.candidate)
        located.candidates.insert(0, verified.candidate)
        stats = verified.stats
        with verified.client as client:
            answers = self._answers(first, verified.replies, master)
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
        try:
            web = (
                []
                if answers['show workers'] is None
                else web_heartbeat_ages(answers['show workers'], stats.uptime_seconds)
            )
            dirty = None
            if answers.get('show all') is not None:
                dirty = dirty_heartbeat_ages(answers['show all'], stats.uptime_seconds)
            if config is None:
                config = self._remember_config(key, stats, answers['show config'])
            if listeners is None:
                listeners = self._remember_listeners(key, stats, answers['show listeners'])
        except BadReply as exc:
            raise ProtocolError(
                'control socket %s: %s' % (verified.candidate.reach, exc), verified.candidate.reach
            ) from exc
        return Health(verified.candidate.reach, stats, config, web, dirty, listeners, verified.upgrade_pid)

    def _locate(self, master: Stat) -> _Located:
        before = self._located.get(master.key)
        now = self.clock()
        if before is not None and (self.configured_path or not before.due(now)):
            return before
        first = now if before is None else before.first
        try:
            uid = self.procfs.read_status(master.pid).uid
        except ProcError as exc:
            self.log.debug('Cannot read master %s to find its control socket: %s', master.pid, exc)
            return _Located([], now, first)
        located = _Located(candidates(self.procfs, master, uid, self.configured_path), now, first)
        self._located[master.key] = located
        if located.candidates is None:
            self.log.debug('Master %s runs with --no-control-socket', master.pid)
        return located

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
        config = parse_config({} if data is None else data)
        if data is not None and stats.reloads is not None:
            self._configs[key] = (stats.reloads, config)
        return config

    def _remember_listeners(self, key: ProcessKey, stats: Stats, data: Any) -> tuple[str, ...]:
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
        for table in (self._located, self._counters, self._configs, self._listeners):
            for key in [k for k in table if k not in masters]:
                del table[key]
