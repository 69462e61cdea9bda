"""The socket tables of proc(5): /proc/PID/net/tcp, /proc/PID/net/tcp6 and /proc/PID/net/unix.

These tables list every socket of the network namespace of PID (not only PID's own sockets), which is what lets the
check read the accept queue of a containerised application through the host's procfs without entering its namespace.
They are world-readable for any process whose /proc directory is visible.

`ProcFS` reads each file whole in one go (the kernel regenerates the text on every read, so reading in pieces can
mix two states) and the pure `parse_<file>` functions here turn the bytes into rows; the tests feed them captured
data.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Collection

from ..procfs import ProcFS
from .rows import TCP_LISTEN, SocketTableError, TcpRow, UnixRow

TCP_TABLES = (('tcp', socket.AF_INET), ('tcp6', socket.AF_INET6))


def _decode_ip(hex_ip: bytes, byteorder: str) -> tuple[int, str]:
    # proc(5): the address is printed as 32-bit words in host byte order (%08X of a __be32), so on a little-endian
    # machine each group of four bytes reads reversed.
    if len(hex_ip) == 8:
        return socket.AF_INET, socket.inet_ntop(socket.AF_INET, int(hex_ip, 16).to_bytes(4, byteorder))
    if len(hex_ip) == 32:
        raw = b''.join(int(hex_ip[i : i + 8], 16).to_bytes(4, byteorder) for i in range(0, 32, 8))
        return socket.AF_INET6, socket.inet_ntop(socket.AF_INET6, raw)
    raise ValueError(f'address of {len(hex_ip)} hex digits')


def parse_net_tcp(
    data: bytes, *, local_ports: Collection[int] | None = None, byteorder: str = sys.byteorder
) -> list[TcpRow]:
    """Rows of /proc/net/tcp or /proc/net/tcp6; `local_ports` keeps only rows on those ports (cheaper on busy hosts).

    `byteorder` is that of the machine that produced `data` (captured fixtures come from little-endian hosts).
    """
    rows: list[TcpRow] = []
    # Many rows share a local address (the listener's, 127.0.0.1): decode each distinct one once.
    ips: dict[bytes, tuple[int, str]] = {}
    for number, line in enumerate(data.split(b'\n'), 1):
        fields = line.split()
        if not fields or fields[0] == b'sl':
            continue
        try:
            local_hex, local_port_hex = fields[1].split(b':')
            local_port = int(local_port_hex, 16)
            if local_ports is not None and local_port not in local_ports:
                continue
            tx_hex, rx_hex = fields[4].split(b':')
            local = ips.get(local_hex) or ips.setdefault(local_hex, _decode_ip(local_hex, byteorder))
            rows.append(
                TcpRow(
                    family=local[0],
                    local_ip=local[1],
                    local_port=local_port,
                    state=int(fields[3], 16),
                    tx_queue=int(tx_hex, 16),
                    rx_queue=int(rx_hex, 16),
                    uid=int(fields[7]),
                    inode=int(fields[9]),
                )
            )
        except (ValueError, IndexError) as exc:
            raise SocketTableError(f'line {number}: {line[:160]!r}') from exc
    return rows


# unix_seq_show: "%pK: %08X %08X %08X %04X %02X %5lu" then " PATH" when bound. %pK prints zeros or a hashed pointer.
_UNIX_LINE = re.compile(
    rb'[0-9A-Fa-f]+: ([0-9A-F]{8}) [0-9A-F]{8} ([0-9A-F]{8}) ([0-9A-F]{4}) ([0-9A-F]{2}) +([0-9]+)(?: (.*))?',
    re.DOTALL,
)


def parse_net_unix(data: bytes) -> list[UnixRow]:
    """Rows of /proc/net/unix. Paths keep spaces; a path containing a newline is rejoined (the kernel prints it raw)."""
    rows: list[UnixRow] = []
    lines = data.split(b'\n')
    if lines[-1] == b'':
        lines.pop()  # the newline ending the last row
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith(b'Num '):
            continue
        match = _UNIX_LINE.fullmatch(line)
        if match is None:
            # unix_seq_show writes the path byte by byte, newlines included: a line that is not a row continues the
            # previous row's path (an empty one when the path itself ends with a newline).
            if rows and rows[-1].path is not None:
                last = rows[-1]
                rows[-1] = UnixRow(
                    last.refcount, last.flags, last.type, last.state, last.inode, last.path + '\n' + os.fsdecode(line)
                )
                continue
            if not line:
                continue
            raise SocketTableError(f'line {number}: {line[:160]!r}')
        refcount, flags, sock_type, state, inode, path = match.groups()
        rows.append(
            UnixRow(
                refcount=int(refcount, 16),
                flags=int(flags, 16),
                type=int(sock_type, 16),
                state=int(state, 16),
                inode=int(inode),
                path=None if path is None else os.fsdecode(path),
            )
        )
    return rows


def _parsed(path: str, parse, *args, **kwargs):
    try:
        return parse(*args, **kwargs)
    except SocketTableError as exc:
        raise SocketTableError(f'{path}: {exc}') from exc


def read_net_tcp(
    procfs: ProcFS,
    pid: int,
    *,
    local_ports: Collection[int] | None = None,
    families: Collection[int] = (socket.AF_INET, socket.AF_INET6),
) -> list[TcpRow]:
    """TCP sockets (IPv4 then IPv6) of the network namespace PID lives in.

    Most of the cost is in the kernel, not here: every read() of these files restarts a walk of the TCP hash tables
    and returns one page of rows, and the walk to the end happens again for the read that reports EOF (measured
    ~2 ms per file on an idle host with 262,144 established-hash buckets). Pass `families` to skip a table the
    listeners cannot be in, and `local_ports` to build rows only for the listeners' ports.
    """
    rows = []
    for name, family in TCP_TABLES:
        if family in families:
            data = procfs.read_net_table(pid, name)
            if data is not None:
                rows += _parsed(procfs.path(pid, 'net', name), parse_net_tcp, data, local_ports=local_ports)
    return rows


def _not_listen(line: bytes) -> bool:
    fields = line.split()
    # proc(5): field 4 is `st`, 0A for LISTEN; the header starts with `sl`.
    return len(fields) > 3 and fields[0] != b'sl' and fields[3] != b'%02X' % TCP_LISTEN


def read_net_tcp_listening(
    procfs: ProcFS, pid: int, *, families: Collection[int] = (socket.AF_INET, socket.AF_INET6)
) -> list[TcpRow]:
    """Only the LISTEN rows of /proc/PID/net/tcp{,6}, without paying for the established table.

    tcp_seq_start walks the listening hash before the established one (net/ipv4/tcp_ipv4.c), so LISTEN rows come
    first; closing the file at the first other row spares the walk of the established hash, which is most of the
    cost of a whole read (measured: 0.19 ms instead of 6 ms with 600 unrelated connections on the host).
    """
    rows = []
    for name, family in TCP_TABLES:
        if family in families:
            data = procfs.read_net_table(pid, name, stop=_not_listen)
            if data is not None:
                rows += _parsed(procfs.path(pid, 'net', name), parse_net_tcp, data)
    return rows


def read_net_unix(procfs: ProcFS, pid: int) -> list[UnixRow]:
    """Unix sockets of the network namespace PID lives in."""
    data = procfs.read_net_table(pid, 'unix')
    return [] if data is None else _parsed(procfs.path(pid, 'net', 'unix'), parse_net_unix, data)
