"""The socket tables of a master's network namespace, read the cheapest exact way on each run.

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
The listening sockets alone (to tell which belong to the app) come from the LISTEN prefix of the TCP tables.

A dump costs the kernel's walk of its whole established hash, whatever the filter: tables given a SharedTcpDump (one
per check) share one dump per family per run with every other app whose master was named beforehand (`expect`), so a
node-wide run of N apps pays for one dump, not N.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...configuration import BindAddress
from ..procfs import ProcessKey, ProcFS, Stat
from . import netlink
from .listener_stats import listener_stats
from .proc_net import read_net_tcp, read_net_tcp_listening, read_net_unix
from .rows import SOCK_STREAM, TCP_LISTEN, ListenerStats, TcpRow, UnixRow
from .shared_dump import DIAG_TIMEOUT_SECONDS, SharedTcpDump, dump_tcp


@dataclass
class SocketTables:
    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    tcp_sockets: Callable[..., list[TcpRow]] = netlink.tcp_sockets
    unix_backlogs: Callable[..., dict[int, int]] = netlink.unix_backlogs
    # One netlink socket for every dump of every run. close() (the check's cancel()) closes it for good: a cancelled
    # check that runs anyway opens a socket per dump and holds nothing.
    session: netlink.Session | None = field(default_factory=netlink.Session)
    # Given, the run's TCP dump shared with other apps' tables (see expect), whose session this one uses instead.
    shared: SharedTcpDump | None = None
    _namespaces: dict[ProcessKey, bool] = field(default_factory=dict)
    _unix_capacity: dict[int, int | None] = field(default_factory=dict)
    _unix_seen: set[int] = field(default_factory=set)
    _diag_unsupported: bool = False
    _told_diag_failed: bool = False

    def __post_init__(self) -> None:
        if self.shared is not None:
            self.session = self.shared.session

    def listening(self, pid: int) -> dict[int, BindAddress]:
        """Listening socket inode -> address, in the network namespace of `pid` (ProcError when unreadable)."""
        found = {
            row.inode: BindAddress(row.family, row.local_ip, row.local_port, '')
            for row in read_net_tcp_listening(self.procfs, pid)
        }
        for row in read_net_unix(self.procfs, pid):
            if row.listening and row.type == SOCK_STREAM and row.path is not None:
                found[row.inode] = BindAddress(socket.AF_UNIX, '', 0, row.path)
        return found

    def queues(self, master: Stat, addresses: Sequence[BindAddress]) -> tuple[list[ListenerStats], list[BindAddress]]:
        """Figures for the listeners at `addresses` in `master`'s network namespace, and the addresses without one.

        Raises ProcError when a table of the master cannot be read (ProcessGone when it exited), and
        SocketTableError when one is malformed.
        """
        inet = [a for a in addresses if a.family != socket.AF_UNIX]
        unix = [a for a in addresses if a.family == socket.AF_UNIX]
        tcp_rows: list[TcpRow] = []
        capacities: dict[int, int] = {}
        if inet:
            tcp_rows, capacities = self._tcp(master, inet)
        unix_rows: list[UnixRow] = []
        if unix:
            unix_rows = read_net_unix(self.procfs, master.pid)
            capacities.update(self._unix_capacities(unix_rows, {a.path for a in unix}))
        found: dict[tuple[str, tuple[int, ...]], ListenerStats] = {}
        missing = []
        # One address at a time, to tell which has no listener; listener_stats never matches a row to two listeners.
        for address in addresses:
            stats = listener_stats(tcp_rows, unix_rows, [address], capacities)
            if not stats:
                missing.append(address)
            for s in stats:
                found[(s.address, s.listen_inodes)] = s
        return list(found.values()), missing

    def expect(self, master: Stat, addresses: Sequence[BindAddress]) -> None:
        """Before `queues(master, addresses)` in this run: the TCP ports it will ask inet_diag about go into the
        shared dump, so that one dump per family serves this master and the other apps'. Reads nothing else."""
        inet = [a for a in addresses if a.family != socket.AF_UNIX]
        if self.shared is not None and inet and not self._diag_unsupported and self._shares_namespace(master):
            self.shared.want({a.family for a in inet}, {a.port for a in inet})

    def close(self) -> None:
        # A shared session is the shared dump's to close (the check's cancel()): other apps' tables still use it.
        if self.session is not None and self.shared is None:
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
            except netlink.SockDiagError as exc:
                # A kernel without inet_diag, or a sandbox refusing netlink, will not change: stop asking. Anything
                # else (a timeout on a loaded host) costs this run the /proc read only.
                self._diag_unsupported = isinstance(exc, netlink.SockDiagUnsupported)
                if not self._told_diag_failed:
                    self._told_diag_failed = True
                    self.log.debug('inet_diag failed (%s); reading /proc/%s/net (~20x the cost)', exc, master.pid)
        return read_net_tcp(self.procfs, master.pid, local_ports=ports, families=families), {}

    def _tcp_from_diag(self, families: list[int], ports: set[int]) -> tuple[list[TcpRow], dict[int, int]]:
        if self.shared is not None and self.shared.covers(families, ports):
            rows = self.shared.rows(families, ports)
        else:
            rows = dump_tcp(self.tcp_sockets, self.session, dict.fromkeys(families, ports))
        # inet_diag gives a listener's capacity as its tx_queue, which /proc does not show.
        return rows, {r.inode: r.tx_queue for r in rows if r.state == TCP_LISTEN}

    def _shares_namespace(self, master: Stat) -> bool:
        known = self._namespaces.get(master.key)
        if known is None:
            known = self.procfs.shares_network_namespace(master.pid)
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
                dumped = self.unix_backlogs(timeout_s=DIAG_TIMEOUT_SECONDS, session=self.session)
            except netlink.SockDiagError as exc:
                self.log.debug('Cannot read unix socket backlogs through unix_diag: %s', exc)
                if not isinstance(exc, netlink.SockDiagUnsupported):
                    return {k: v for k in inodes if (v := self._unix_capacity.get(k)) is not None}  # next run
                dumped = {}
            # A socket unix_diag does not show lives in another namespace: remember that too, to ask only once.
            for inode in inodes - self._unix_capacity.keys():
                self._unix_capacity[inode] = dumped.get(inode)
        return {k: v for k in inodes if (v := self._unix_capacity.get(k)) is not None}
