"""Accept queues and accepted connections of identified listeners, read the cheapest exact way on each run.

Measured on this kind of host (2 CPUs, 262,144 established-hash buckets, 600 unrelated loopback connections), CPU per
read, kernel time included:

| what | how | cost |
|---|---|---|
| TCP queue, capacity and connections | inet_diag dump, local-port bytecode filter, one per family | 0.30 ms |
| TCP queue, capacity and connections | /proc/PID/net/tcp whole (tcp6 alike) | 6.0 ms (4.0 ms) |
| TCP queue only | /proc/PID/net/tcp up to the first non-LISTEN row | 0.19 ms |
| unix queue and connections | /proc/PID/net/unix | 0.04 ms |
| unix capacity | unix_diag dump of listeners | 0.04 ms, cached per socket |

So: TCP through inet_diag when the master shares the Agent's network namespace (sock_diag answers only for the
caller's), through /proc/MASTER/net/tcp{,6} otherwise - only the families the listeners need - where the capacity is
unknown. Unix sockets always through /proc/MASTER/net/unix, which works in any namespace; their capacity comes from
unix_diag once per listening socket (a listen() backlog does not change) and is absent for another namespace's.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import sock_diag
from .netstat import BindAddress, ListenerStats, TcpRow, UnixRow, listener_stats, read_net_tcp, read_net_unix
from .procfs import ProcessKey, Stat

# One deadline for the netlink dumps of a run; an answer is normally back in well under a millisecond.
DIAG_TIMEOUT_SECONDS = 0.5


@dataclass
class QueueReader:
    root: str
    log: logging.Logger | logging.LoggerAdapter
    tcp_sockets: Callable[..., list[sock_diag.TcpSocket]] = sock_diag.tcp_sockets
    unix_listeners: Callable[..., list[sock_diag.UnixListener]] = sock_diag.unix_listeners
    same_namespace: Callable[[int, str], bool | None] = sock_diag.same_network_namespace
    # One netlink socket for every dump of every run. close() (the check's cancel()) closes it for good: a cancelled
    # check that runs anyway opens a socket per dump and holds nothing.
    session: sock_diag.Session | None = field(default_factory=sock_diag.Session)
    _namespaces: dict[ProcessKey, bool] = field(default_factory=dict)
    _unix_capacity: dict[int, int | None] = field(default_factory=dict)
    _unix_seen: set[int] = field(default_factory=set)
    _diag_unsupported: bool = False
    _told_diag_failed: bool = False

    def read(self, master: Stat, addresses: Sequence[BindAddress]) -> tuple[list[ListenerStats], list[BindAddress]]:
        """Figures for the listeners at `addresses` in `master`'s network namespace, and the addresses without one.

        Raises netstat.NetError when a table of the master cannot be read (NetProcessGone when it exited).
        """
        inet = [a for a in addresses if a.family != socket.AF_UNIX]
        unix = [a for a in addresses if a.family == socket.AF_UNIX]
        tcp_rows: list[TcpRow] = []
        capacities: dict[int, int] = {}
        if inet:
            tcp_rows, capacities = self._tcp(master, inet)
        unix_rows: list[UnixRow] = []
        if unix:
            unix_rows = read_net_unix(self.root, master.pid)
            capacities.update(self._unix_capacities(unix_rows, {a.path for a in unix}))
        found: dict[tuple[str, tuple[int, ...]], ListenerStats] = {}
        missing = []
        # One address at a time, to tell which has no listener; listener_stats never matches a row to two listeners.
        for address in addresses:
            stats = listener_stats(tcp_rows, unix_rows, addresses=[address], max_backlogs=capacities)
            if not stats:
                missing.append(address)
            for s in stats:
                found[(s.address, s.listen_inodes)] = s
        return list(found.values()), missing

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def prune(self, masters: Sequence[ProcessKey]) -> None:
        """Forget masters and sockets not seen since the previous prune (once per run)."""
        live = set(masters)
        self._namespaces = {k: v for k, v in self._namespaces.items() if k in live}
        self._unix_capacity = {k: v for k, v in self._unix_capacity.items() if k in self._unix_seen}
        self._unix_seen = set()

    # TCP

    def _tcp(self, master: Stat, addresses: list[BindAddress]) -> tuple[list[TcpRow], dict[int, int]]:
        families = sorted({a.family for a in addresses})
        ports = {a.port for a in addresses}
        if not self._diag_unsupported and self._shares_namespace(master):
            try:
                return self._tcp_from_diag(families, ports)
            except sock_diag.SockDiagError as exc:
                # A kernel without inet_diag, or a sandbox refusing netlink, will not change: stop asking. Anything
                # else (a timeout on a loaded host) costs this run the /proc read only.
                self._diag_unsupported = isinstance(exc, sock_diag.SockDiagUnsupported)
                if not self._told_diag_failed:
                    self._told_diag_failed = True
                    self.log.debug('inet_diag failed (%s); reading /proc/%s/net (~20x the cost)', exc, master.pid)
        return read_net_tcp(self.root, master.pid, local_ports=ports, families=families), {}

    def _tcp_from_diag(self, families: list[int], ports: set[int]) -> tuple[list[TcpRow], dict[int, int]]:
        deadline = time.monotonic() + DIAG_TIMEOUT_SECONDS
        rows = []
        capacities = {}
        for family in families:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise sock_diag.SockDiagTimeout('inet_diag dumps not finished after %.1fs' % DIAG_TIMEOUT_SECONDS)
            for s in self.tcp_sockets(family, ports, timeout_s=remaining, session=self.session):
                # The fields of a /proc/net/tcp row: for a LISTEN socket rqueue is the queue (the table's rx_queue)
                # and wqueue the capacity the table does not show.
                rows.append(
                    TcpRow(
                        s.family,
                        s.local_ip,
                        s.local_port,
                        s.remote_ip,
                        s.remote_port,
                        s.state,
                        s.wqueue,
                        s.rqueue,
                        s.uid,
                        s.inode,
                    )
                )
                if s.state == sock_diag.TCP_LISTEN:
                    capacities[s.inode] = s.wqueue
        return rows, capacities

    def _shares_namespace(self, master: Stat) -> bool:
        known = self._namespaces.get(master.key)
        if known is None:
            known = self.same_namespace(master.pid, self.root)
            if known is None:
                return False  # unknown this time (hidden /proc?): /proc is right either way; ask again next run
            self._namespaces[master.key] = known
            if not known:
                self.log.debug(
                    'Master %s runs in another network namespace than the Agent: its TCP queues come from '
                    '/proc/%s/net (no capacity, and a whole table read per run)',
                    master.pid,
                    master.pid,
                )
        return known

    # Unix

    def _unix_capacities(self, rows: list[UnixRow], paths: set[str]) -> dict[int, int]:
        inodes = {r.inode for r in rows if r.listening and r.path in paths}
        self._unix_seen |= inodes
        if inodes - self._unix_capacity.keys():
            try:
                listeners = self.unix_listeners(timeout_s=DIAG_TIMEOUT_SECONDS, session=self.session)
                dumped = {u.inode: u.max_backlog for u in listeners}
            except sock_diag.SockDiagError as exc:
                self.log.debug('Cannot read unix socket backlogs through unix_diag: %s', exc)
                if not isinstance(exc, sock_diag.SockDiagUnsupported):
                    return {k: v for k in inodes if (v := self._unix_capacity.get(k)) is not None}  # next run
                dumped = {}
            # A socket unix_diag does not show lives in another namespace: remember that too, to ask only once.
            for inode in inodes - self._unix_capacity.keys():
                self._unix_capacity[inode] = dumped.get(inode)
        return {k: v for k in inodes if (v := self._unix_capacity.get(k)) is not None}
