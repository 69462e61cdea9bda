"""Per-listener figures from socket rows: accept queue, capacity and accepted connections of the listeners at the
addresses the caller identified exactly. Which listener is the application's is never guessed here.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterable, Mapping

from ...configuration import BindAddress
from .rows import SOCK_STREAM, SS_CONNECTED, SS_CONNECTING, TCP_LISTEN, ListenerStats, TcpRow, UnixRow


def listener_stats(
    tcp: Iterable[TcpRow],
    unix: Iterable[UnixRow],
    addresses: Collection[BindAddress],
    max_backlogs: Mapping[int, int] | None = None,
) -> list[ListenerStats]:
    """Queue figures for the listeners at `addresses`; `max_backlogs` maps listening inodes to their capacity.

    A wildcard address matches only the wildcard listener, never a listener on a specific address of the same port.
    Listeners that have no row (not bound yet, or another network namespace) are left out. For unix sockets,
    connections are attributed by path: two listening sockets bound to the same path (a stale one whose file was
    replaced) share them.
    """
    if not addresses:
        return []
    return _tcp_stats(tcp, addresses, max_backlogs) + _unix_stats(unix, addresses, max_backlogs)


def _unmapped(ip: str) -> str:
    # A v4-mapped IPv6 address (an AF_INET6 socket bound to ::ffff:a.b.c.d) names the same endpoint as a.b.c.d.
    return ip[7:] if ip.startswith('::ffff:') and '.' in ip else ip


def _tcp_key(family: int, ip: str, port: int) -> tuple[int, str, int]:
    if ip in ('0.0.0.0', '::'):
        return family, ip, port
    return 0, _unmapped(ip), port


def _max_backlog(inodes: Iterable[int], max_backlogs: Mapping[int, int] | None) -> int | None:
    if not max_backlogs:
        return None
    try:
        return sum(max_backlogs[inode] for inode in inodes)
    except KeyError:
        return None


def _tcp_stats(
    rows: Iterable[TcpRow], addresses: Collection[BindAddress], max_backlogs: Mapping[int, int] | None
) -> list[ListenerStats]:
    wanted = {_tcp_key(a.family, a.ip, a.port) for a in addresses if a.family != socket.AF_UNIX}
    if not wanted:
        return []
    rows = list(rows)
    listeners: dict[tuple[int, str, int], list[TcpRow]] = {}
    for row in rows:
        if row.state != TCP_LISTEN:
            continue
        key = _tcp_key(row.family, row.local_ip, row.local_port)
        if key in wanted:
            listeners.setdefault(key, []).append(row)
    if not listeners:
        return []
    accepted: dict[tuple[int, str, int], set[int]] = {key: set() for key in listeners}
    wildcard = {(k[0], k[2]): k for k in listeners if k[0]}
    ports = {k[2] for k in listeners}
    for row in rows:
        # A non-zero inode means a process holds the socket: the connection left the accept queue. Any state counts
        # (ESTABLISHED, or CLOSE_WAIT once the client hung up while the worker still holds it).
        if row.inode == 0 or row.state == TCP_LISTEN or row.local_port not in ports:
            continue
        # A set, not a count: a table read in several passes can show a row twice when sockets move meanwhile.
        exact = (0, _unmapped(row.local_ip), row.local_port)
        if exact in accepted:
            accepted[exact].add(row.inode)
        elif (row.family, row.local_port) in wildcard:
            # A wildcard listener accepts for every local address of its family; a dual-stack '::' listener's IPv4
            # clients appear in tcp6 with v4-mapped addresses, so the table the row came from decides.
            accepted[wildcard[(row.family, row.local_port)]].add(row.inode)
    stats = []
    for key, found in listeners.items():
        family = found[0].family
        listen_inodes = tuple(sorted(r.inode for r in found))
        stats.append(
            ListenerStats(
                address=str(BindAddress(family, found[0].local_ip, key[2], '')),
                kind='tcp6' if family == socket.AF_INET6 else 'tcp',
                listen_inodes=listen_inodes,
                queued=sum(r.rx_queue for r in found),
                in_flight=len(accepted[key]),
                max_backlog=_max_backlog(listen_inodes, max_backlogs),
                accepted_inodes=frozenset(accepted[key]),
            )
        )
    return stats


def _unix_stats(
    rows: Iterable[UnixRow], addresses: Collection[BindAddress], max_backlogs: Mapping[int, int] | None
) -> list[ListenerStats]:
    wanted = {a.path for a in addresses if a.family == socket.AF_UNIX}
    if not wanted:
        return []
    rows = [r for r in rows if r.path is not None and r.type == SOCK_STREAM]
    listeners: dict[str, list[int]] = {}
    for row in rows:
        if row.listening and row.path in wanted:
            listeners.setdefault(row.path, []).append(row.inode)
    if not listeners:
        return []
    queued = dict.fromkeys(listeners, 0)
    accepted: dict[str, set[int]] = {path: set() for path in listeners}
    for row in rows:
        if row.listening or row.path not in listeners:
            continue
        # unix_seq_show prints SS_CONNECTING for a socket without a struct socket (no file yet) that is established:
        # the server half unix_stream_connect() queued on the listener. accept() grafts a file onto it, and it then
        # shows SS_CONNECTED with an inode. Verified against `ss -lx` Recv-Q on 6.x kernels.
        if row.state == SS_CONNECTING and row.inode == 0:
            queued[row.path] += 1
        elif row.state == SS_CONNECTED and row.inode != 0:
            accepted[row.path].add(row.inode)
    return [
        ListenerStats(
            address=f'unix:{path}',
            kind='unix',
            listen_inodes=tuple(sorted(found)),
            queued=queued[path],
            in_flight=len(accepted[path]),
            max_backlog=_max_backlog(found, max_backlogs),
            accepted_inodes=frozenset(accepted[path]),
        )
        for path, found in listeners.items()
    ]
