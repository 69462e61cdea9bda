"""What the application's processes cost, per role (master, worker, dirty arbiter, dirty worker), and worker churn.

Everything comes from files an unprivileged reader may open (stat, schedstat, uptime) except PSS (smaps_rollup),
which needs ptrace-level access and costs about 0.4 ms per Python process: it is refreshed at most every
`PSS_REFRESH_SECONDS`, and at once for processes it has never seen, and reported from that cache in between.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .activity import CpuSampler, CpuTime
from .discovery import AppTree
from .procfs import ProcError, ProcessAccessDenied, ProcessKey, ProcFS, Stat

PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')
TICKS_PER_SECOND = os.sysconf('SC_CLK_TCK')
PSS_REFRESH_SECONDS = 300.0

ROLES = ('master', 'worker', 'dirty_arbiter', 'dirty_worker')


@dataclass(frozen=True)
class RoleUsage:
    role: str
    processes: int
    threads: int
    rss_bytes: int
    rss_bytes_max: int
    pss_bytes: int | None  # None when any process of the role could not be measured
    pss_bytes_max: int | None
    cpu_pct: float | None  # percent of one CPU since the previous run; None on the first run
    run_queue_wait_pct: float | None  # time spent waiting for a CPU, same scale


@dataclass(frozen=True)
class Usage:
    roles: list[RoleUsage]
    masters: int
    master_uptime_seconds: float | None
    worker_age_min_seconds: float | None
    worker_age_max_seconds: float | None
    worker_exits: int | None  # workers gone since the previous run; None on the first run


def processes_by_role(trees: list[AppTree]) -> dict[str, list[Stat]]:
    return {
        'master': [s for t in trees for s in (t.master, *t.upgrade_masters)],
        'worker': [s for t in trees for s in t.workers],
        'dirty_arbiter': [s for t in trees for s in t.dirty_arbiters],
        'dirty_worker': [s for t in trees for s in t.dirty_workers],
    }


@dataclass
class ResourceTracker:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    clock: Callable[[], float] = time.monotonic
    _cpu: dict[ProcessKey, CpuTime] = field(default_factory=dict)
    _cpu_at: float | None = None
    _workers: set[ProcessKey] | None = None
    _pss: dict[ProcessKey, int] = field(default_factory=dict)
    _pss_at: float | None = None
    _pss_denied: bool = False

    def measure(self, trees: list[AppTree], worker_cpu: dict[int, CpuTime], sampler: CpuSampler) -> Usage:
        """Usage of every process in `trees`; `worker_cpu` are the workers' samples the run already took."""
        now = self.clock()
        by_role = processes_by_role(trees)
        others = [s for role, stats in by_role.items() if role != 'worker' for s in stats]
        cpu_by_pid = {**sampler.sample([s.pid for s in others], {s.pid: s.num_threads for s in others}), **worker_cpu}
        every = [s for stats in by_role.values() for s in stats]
        cpu = {s.key: cpu_by_pid[s.pid] for s in every if s.pid in cpu_by_pid}
        self._refresh_pss(every, now)

        elapsed_ns = (now - self._cpu_at) * 1e9 if self._cpu_at is not None else None
        roles = [self._role_usage(role, stats, cpu, elapsed_ns) for role, stats in by_role.items() if stats]
        self._cpu, self._cpu_at = cpu, now

        uptime = self._uptime()
        workers = {s.key for s in by_role['worker']}
        exits = None if self._workers is None else len(self._workers - workers)
        self._workers = workers
        worker_ages = [uptime - s.start_ticks / TICKS_PER_SECOND for s in by_role['worker']] if uptime else []
        return Usage(
            roles=roles,
            masters=len(by_role['master']),
            master_uptime_seconds=(
                max(uptime - s.start_ticks / TICKS_PER_SECOND for s in by_role['master']) if uptime else None
            ),
            worker_age_min_seconds=min(worker_ages) if worker_ages else None,
            worker_age_max_seconds=max(worker_ages) if worker_ages else None,
            worker_exits=exits,
        )

    def _role_usage(
        self, role: str, stats: list[Stat], cpu: dict[ProcessKey, CpuTime], elapsed_ns: float | None
    ) -> RoleUsage:
        rss = [s.rss_pages * PAGE_SIZE for s in stats]
        pss = [self._pss.get(s.key) for s in stats]
        known_pss = [p for p in pss if p is not None]
        cpu_pct = wait_pct = None
        if elapsed_ns:
            # Only processes alive at both runs: a worker born since has no baseline, one that exited no end.
            both = [(self._cpu[s.key], cpu[s.key]) for s in stats if s.key in self._cpu and s.key in cpu]
            cpu_pct = 100.0 * sum(max(b.on_cpu_ns - a.on_cpu_ns, 0) for a, b in both) / elapsed_ns
            if all(a.run_delay_ns is not None and b.run_delay_ns is not None for a, b in both):
                wait_pct = 100.0 * sum(max(b.run_delay_ns - a.run_delay_ns, 0) for a, b in both) / elapsed_ns
        full_pss = len(known_pss) == len(pss)
        return RoleUsage(
            role=role,
            processes=len(stats),
            threads=sum(s.num_threads for s in stats),
            rss_bytes=sum(rss),
            rss_bytes_max=max(rss),
            pss_bytes=sum(known_pss) if full_pss else None,
            pss_bytes_max=max(known_pss) if full_pss else None,
            cpu_pct=cpu_pct,
            run_queue_wait_pct=wait_pct,
        )

    def _refresh_pss(self, stats: list[Stat], now: float) -> None:
        due = self._pss_at is None or now - self._pss_at >= PSS_REFRESH_SECONDS
        if due:
            self._pss_at = now
            self._pss_denied = False
        elif self._pss_denied:
            return
        live = {s.key for s in stats}
        self._pss = {k: v for k, v in self._pss.items() if k in live}
        for stat in stats:
            if not due and stat.key in self._pss:
                continue
            try:
                self._pss[stat.key] = self.procfs.read_pss(stat.pid)
            except ProcessAccessDenied:
                if not self._pss_denied:
                    self.log.debug(
                        'PSS needs ptrace-level access (root or CAP_SYS_PTRACE) to read /proc/%s/smaps_rollup; '
                        'memory is reported as RSS only until the next attempt in %ds',
                        stat.pid,
                        PSS_REFRESH_SECONDS,
                    )
                self._pss_denied = True
                return
            except ProcError as exc:
                self.log.debug('Cannot read the PSS of %s: %s', stat.pid, exc)

    def _uptime(self) -> float | None:
        try:
            return self.procfs.read_uptime()
        except ProcError as exc:
            self.log.debug('%s', exc)
            return None
