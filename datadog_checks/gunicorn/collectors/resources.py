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

from ..sources.procfs import ProcError, ProcessAccessDenied, ProcessKey, ProcFS, Stat
from .cpu import CpuSampler, CpuTime
from .discovery import AppTree

PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')
TICKS_PER_SECOND = os.sysconf('SC_CLK_TCK')
PSS_REFRESH_SECONDS = 300.0


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
    pss: bool = True  # False when no PSS metric is sent: smaps_rollup is then never read
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
        if self.pss:
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
        # One loop for every sum: a generator per sum cost a call per process and sum.
        threads = rss_pages = rss_pages_max = 0
        pss_total = pss_max = 0
        pss_complete = True
        for s in stats:
            threads += s.num_threads
            rss_pages += s.rss_pages
            if s.rss_pages > rss_pages_max:
                rss_pages_max = s.rss_pages
            pss = self._pss.get(s.key)
            if pss is None:
                pss_complete = False
            else:
                pss_total += pss
                if pss > pss_max:
                    pss_max = pss
        cpu_pct = wait_pct = None
        if elapsed_ns:
            used = waited = 0
            waits_known = True
            for s in stats:
                # Only processes alive at both runs: a worker born since has no baseline, one that exited no end.
                before, after = self._cpu.get(s.key), cpu.get(s.key)
                if before is None or after is None:
                    continue
                used += max(after.on_cpu_ns - before.on_cpu_ns, 0)
                if before.run_delay_ns is None or after.run_delay_ns is None:
                    waits_known = False
                elif waits_known:
                    waited += max(after.run_delay_ns - before.run_delay_ns, 0)
            cpu_pct = 100.0 * used / elapsed_ns
            wait_pct = 100.0 * waited / elapsed_ns if waits_known else None
        return RoleUsage(
            role=role,
            processes=len(stats),
            threads=threads,
            rss_bytes=rss_pages * PAGE_SIZE,
            rss_bytes_max=rss_pages_max * PAGE_SIZE,
            pss_bytes=pss_total if pss_complete else None,
            pss_bytes_max=pss_max if pss_complete else None,
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
