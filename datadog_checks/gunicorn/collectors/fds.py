"""What the app's processes hold open, from /proc/PID/fd: their sockets, and whether they run an event loop.

Reading another user's fd directory needs ptrace-level access (root or CAP_SYS_PTRACE). Without it the reader says
so once, stops trying, and the features built on it (finding listeners from the workers' sockets, telling which
worker holds a connection) fall back to what needs no privileges. A readlink costs about 5 us, so callers read fds
only when identifying listeners and for the few workers whose state is ambiguous, never every worker every run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..sources.procfs import ProcError, ProcessAccessDenied, ProcessKey, ProcFS, Stat, holds_event_poll, socket_inodes

DENIED_MESSAGE = (
    "Cannot read %s; another user's fds need root or CAP_SYS_PTRACE. Without them the check cannot find the app's "
    "listening sockets from its processes' sockets (set the `bind` option instead) nor tell which worker holds a "
    'connection; the other metrics are not affected.'
)


@dataclass
class FdReader:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    denied: bool = False  # once denied, for good: privileges do not change while the Agent runs
    # Workers seen holding an epoll instance. Only positive evidence is kept: a worker read while still booting may
    # not have created its event loop yet.
    event_loop: set[ProcessKey] = field(default_factory=set)

    def sockets(self, stat: Stat) -> frozenset[int] | None:
        """Socket inodes `stat`'s process holds; None when it is gone or its fds may not be read."""
        if self.denied:
            return None
        try:
            links = self.procfs.read_fd_links(stat.pid)
        except ProcessAccessDenied as exc:
            self.denied = True
            self.log.debug(DENIED_MESSAGE, exc)
            return None
        except ProcError as exc:
            self.log.debug('Cannot read the fds of %s: %s', stat.pid, exc)
            return None
        if holds_event_poll(links):
            self.event_loop.add(stat.key)
        return socket_inodes(links)

    def prune(self, live: Iterable[ProcessKey]) -> None:
        if self.event_loop:
            self.event_loop &= set(live)
