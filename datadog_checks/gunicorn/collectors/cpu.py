"""CPU time of Gunicorn processes: which workers are working across one shared sample window.

The nanosecond on-CPU time of /proc/PID/schedstat tells a brief heartbeat wakeup from real work, and its run-queue
wait says how long a process waited for a CPU. That file counts the main thread only, so a process known to run
several threads (a gthread worker's pool, the master's control-socket thread) is summed over /proc/PID/task/*/.
Where the kernel does not provide schedstat (no CONFIG_SCHED_INFO) the clock-tick CPU time of /proc/PID/stat is used
instead, whose 10 ms resolution makes any tick a sign of work and which has no run-queue wait.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ..sources.procfs import CpuTime, ProcError, ProcessGone, ProcFS
from .working import WORKING_MIN_CPU_NS, WorkerCounts, count_working

NS_PER_TICK = 1_000_000_000 // os.sysconf('SC_CLK_TCK')
K = TypeVar('K', bound=Hashable)


@dataclass
class CpuSampler:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    use_schedstat: bool = field(default=True)

    def count(
        self, pids: Iterable[int], window_seconds: float, threads: Mapping[int, int] | None = None
    ) -> tuple[WorkerCounts, dict[int, CpuTime]]:
        """Sample every worker, wait one window, sample again; return the split and the samples at the end.

        `threads` gives the thread count of each pid (from /proc/PID/stat): those with more than one are summed over
        their threads, or the work of gthread's pool threads would never show.
        """
        counts, after = self.count_groups({None: pids}, window_seconds, threads)
        return counts[None], after

    def count_groups(
        self, groups: Mapping[K, Iterable[int]], window_seconds: float, threads: Mapping[int, int] | None = None
    ) -> tuple[dict[K, WorkerCounts], dict[int, CpuTime]]:
        """`count` for several groups of workers (one per container, say) in one shared window."""
        groups = {key: list(pids) for key, pids in groups.items()}
        everyone = [pid for pids in groups.values() for pid in pids]
        if not everyone:
            return {key: WorkerCounts(0, 0) for key in groups}, {}
        start = self.clock()
        before = self.sample(everyone, threads)
        # A worker is watched from its read in the first pass to its read in the second, and both passes take about
        # as long: sleeping only what the first pass left of the window watches each worker for `window_seconds`,
        # not that plus a pass, and ends the run a pass sooner (about a millisecond for 256 workers).
        self.sleep(max(0.0, window_seconds - (self.clock() - start)))
        after = self.sample(before, threads)
        threshold = WORKING_MIN_CPU_NS if self.use_schedstat else NS_PER_TICK

        def on_cpu(samples: dict[int, CpuTime], pids: list[int]) -> dict[int, int]:
            return {pid: samples[pid].on_cpu_ns for pid in pids if pid in samples}

        counts = {
            key: count_working(on_cpu(before, pids), on_cpu(after, pids), threshold) for key, pids in groups.items()
        }
        return counts, after

    def sample(self, pids: Iterable[int], threads: Mapping[int, int] | None = None) -> dict[int, CpuTime]:
        """CPU time of each pid still alive and readable, summed over threads where `threads` says there are several."""
        pids = list(pids)
        found: dict[int, CpuTime] = {}
        failed: dict[int, ProcError] = {}
        if self.use_schedstat:
            # One call for the whole pass: a chain of calls per pid cost more than its read.
            found, failed = self.procfs.read_cpu_times(pids, threads)
            if not failed:
                return found
        samples = {}
        for pid in pids:
            # `use_schedstat` may turn False half way: the rest of the pass then reads clock ticks, as the next will.
            if pid in found and self.use_schedstat:
                samples[pid] = found[pid]
                continue
            try:
                samples[pid] = self._ticks(pid, failed.get(pid) if self.use_schedstat else None)
            except ProcError as exc:
                self.log.debug('Cannot read the CPU time of %s: %s', pid, exc)
        return samples

    def _ticks(self, pid: int, schedstat_error: ProcError | None) -> CpuTime:
        """The clock-tick CPU time of `pid`, after `schedstat_error` if its schedstat could not be read."""
        if schedstat_error is not None:
            if isinstance(schedstat_error, ProcessGone) and not os.path.exists(self.procfs.path(pid)):
                raise schedstat_error
            self._schedstat_unavailable(pid)
        return CpuTime(self.procfs.read_stat(pid).cpu_ticks * NS_PER_TICK, None)

    def _schedstat_unavailable(self, pid: int) -> None:
        self.log.debug('No readable /proc/%s/schedstat; using clock-tick CPU times from /proc/PID/stat', pid)
        self.use_schedstat = False
