"""Pure rules for whether a worker was working: the CPU window's split, the worker model, and the split completed by
requests in flight. No I/O and no clock here, so that every rule can be tested on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# A worker counts as working when it spent at least this long on a CPU during the sample window. Idle workers
# wake up to refresh their heartbeat (sync: under 0.1 ms every timeout/2; gthread: about 0.2 ms each second,
# measured on Gunicorn 27.0.1); a request that computes anything costs more.
WORKING_MIN_CPU_NS = 2_000_000


@dataclass(frozen=True)
class WorkerCounts:
    working: int
    idle: int
    # Which workers the CPU window saw working (empty when the counts come from elsewhere).
    working_pids: frozenset[int] = field(default=frozenset(), compare=False)

    @property
    def total(self) -> int:
        return self.working + self.idle


def count_working(before_ns: Mapping[int, int], after_ns: Mapping[int, int], min_cpu_ns: int) -> WorkerCounts:
    """Split workers by the CPU time each used between two samples.

    Only workers sampled at both ends count: a worker that exited during the window is neither working nor idle,
    and one that appeared during it was not watched.
    """
    working: set[int] = set()
    idle = 0
    for pid, start in before_ns.items():
        end = after_ns.get(pid)
        if end is None:
            continue
        if end - start >= min_cpu_ns:
            working.add(pid)
        else:
            idle += 1
    return WorkerCounts(len(working), idle, frozenset(working))


class WorkerModel(enum.Enum):
    """How a worker serves connections, which decides what an open connection says about it."""

    SYNC = 'sync'  # one connection at a time (the sync class): a worker holding one is inside a request
    CONCURRENT = 'concurrent'  # threads or an event loop (gthread, gevent, tornado, asgi, ...): it says nothing


def worker_model(
    worker_class: str | None, threads: int | None, worker_threads: Iterable[int], event_loop: bool
) -> WorkerModel:
    """The model of the app's workers: from Gunicorn's configuration when it is known, else from what they show.

    `worker_class` and `threads` come from the control socket's `show config` (Gunicorn 25.1+); `sync` with more
    than one thread is gthread (gunicorn/config.py). Without them: a worker running more than one OS thread is
    threaded (gthread starts its pool threads with the first request, and an app may start a thread of its own:
    either way a connection no longer means a busy worker), and `event_loop` says a worker holds an epoll instance,
    which the sync worker never creates (it waits in select()) and every event-loop class does. An app that starts
    threads or an event loop inside a sync worker is taken for concurrent: the worker split then falls back to CPU
    alone, as before, rather than counting idle connections as work.
    """
    if worker_class is not None:
        return WorkerModel.SYNC if worker_class == 'sync' and (threads or 1) <= 1 else WorkerModel.CONCURRENT
    if event_loop or any(n > 1 for n in worker_threads):
        return WorkerModel.CONCURRENT
    return WorkerModel.SYNC


def combine_working(cpu: WorkerCounts, in_flight: int, working_without_connection: int | None = None) -> WorkerCounts:
    """The working/idle split of sync workers from the CPU window and the connections they hold.

    A sync worker serves one connection from accept() to close, so each connection in flight is one worker inside a
    request, whether it computes or waits on I/O; the CPU window adds workers busy without a connection (booting,
    importing the app). `working_without_connection` is how many CPU-working workers were checked to hold no
    connection, when the check could read their fds: the split is then exact. Without it, the larger of the two
    signals is a lower bound that is exact whenever one of them is zero or every CPU-working worker holds a request.
    Never more than the workers the window watched.
    """
    if working_without_connection is None:
        working = max(cpu.working, in_flight)
    else:
        working = in_flight + working_without_connection
    working = min(working, cpu.total)
    return WorkerCounts(working, cpu.total - working, cpu.working_pids)
