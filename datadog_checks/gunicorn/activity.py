"""Which workers are working: CPU time per worker across one shared sample window.

The nanosecond on-CPU time of /proc/PID/schedstat tells a brief heartbeat wakeup from real work; where the kernel
does not provide it (no CONFIG_SCHED_INFO) the clock-tick CPU time of /proc/PID/stat is used instead, whose 10 ms
resolution makes any tick a sign of work.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .classify import WORKING_MIN_CPU_NS, WorkerCounts, count_working
from .procfs import ProcError, ProcessGone, ProcFS

NS_PER_TICK = 1_000_000_000 // os.sysconf('SC_CLK_TCK')
K = TypeVar('K', bound=Hashable)


@dataclass
class CpuSampler:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    sleep: Callable[[float], None] = time.sleep
    use_schedstat: bool = field(default=True)

    def count(self, pids: Iterable[int], window_seconds: float) -> WorkerCounts:
        """Sample every worker, wait one window, sample again, and split them into working and idle."""
        return self.count_groups({None: pids}, window_seconds)[None]

    def count_groups(self, groups: Mapping[K, Iterable[int]], window_seconds: float) -> dict[K, WorkerCounts]:
        """`count` for several groups of workers (one per container, say) in one shared window."""
        groups = {key: list(pids) for key, pids in groups.items()}
        everyone = [pid for pids in groups.values() for pid in pids]
        if not everyone:
            return {key: WorkerCounts(0, 0) for key in groups}
        before = self.sample(everyone)
        self.sleep(window_seconds)
        after = self.sample(before)
        threshold = WORKING_MIN_CPU_NS if self.use_schedstat else NS_PER_TICK
        return {
            key: count_working({pid: before[pid] for pid in pids if pid in before}, after, threshold)
            for key, pids in groups.items()
        }

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
