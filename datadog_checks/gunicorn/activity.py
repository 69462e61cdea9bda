"""Which workers are working: CPU time per worker across one shared sample window.

The nanosecond on-CPU time of /proc/PID/schedstat tells a brief heartbeat wakeup from real work; where the kernel
does not provide it (no CONFIG_SCHED_INFO) the clock-tick CPU time of /proc/PID/stat is used instead, whose 10 ms
resolution makes any tick a sign of work.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .classify import WORKING_MIN_CPU_NS, WorkerCounts, count_working
from .procfs import ProcError, ProcessGone, ProcFS

NS_PER_TICK = 1_000_000_000 // os.sysconf('SC_CLK_TCK')


@dataclass
class CpuSampler:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    use_schedstat: bool = field(default=True)

    def count(self, pids: Iterable[int], window_seconds: float) -> WorkerCounts:
        """Sample every worker, wait one window, sample again, and split them into working and idle."""
        pids = list(pids)
        if not pids:
            return WorkerCounts(0, 0)
        start = self.clock()
        before = self.sample(pids)
        # A worker is watched from its read in the first pass to its read in the second, and both passes take about
        # as long: sleeping only what the first pass left of the window watches each worker for `window_seconds`,
        # not that plus a pass, and ends the run a pass sooner (about a millisecond for 256 workers).
        self.sleep(max(0.0, window_seconds - (self.clock() - start)))
        after = self.sample(before)
        return count_working(before, after, WORKING_MIN_CPU_NS if self.use_schedstat else NS_PER_TICK)

    def sample(self, pids: Iterable[int]) -> dict[int, int]:
        """On-CPU nanoseconds of each pid still alive and readable."""
        samples = {}
        for pid in pids:
            try:
                samples[pid] = self._cpu_ns(pid)
            except ProcError as exc:
                self.log.debug('Cannot read the CPU time of worker %s: %s', pid, exc)
        return samples

    def _cpu_ns(self, pid: int) -> int:
        if self.use_schedstat:
            try:
                return self.procfs.read_schedstat(pid).on_cpu_ns
            except ProcessGone:
                if not os.path.exists(self.procfs.path(pid)):
                    raise
                self._schedstat_unavailable(pid)
            except ProcError:
                self._schedstat_unavailable(pid)
        return self.procfs.read_stat(pid).cpu_ticks * NS_PER_TICK

    def _schedstat_unavailable(self, pid: int) -> None:
        self.log.debug('No readable /proc/%s/schedstat; using clock-tick CPU times from /proc/PID/stat', pid)
        self.use_schedstat = False
