"""Readers for the socket tables of proc(5): /proc/PID/net/tcp, /proc/PID/net/tcp6 and /proc/PID/net/unix.

These tables list every socket of the network namespace of PID (not only PID's own sockets), which is what lets the
check read the accept queue of a containerised application through the host's procfs without entering its namespace.
They are world-readable for any process whose /proc directory is visible; only `/proc/PID/fd` (used to tell which
sockets belong to the application) needs ptrace-level access.

Each reader reads its file whole in one go (the kernel regenerates the text on every read, so reading in pieces can
mix two states) and hands the bytes to a pure `parse_<file>` function that the tests feed with captured data.
`listener_stats` turns rows into per-listener figures for listeners the caller identified exactly; this module
never guesses which listener belongs to the application.

Module is self-contained (standard library only) so that it can be loaded and tested on its own.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_ROOT = '/proc'
# One read() of a seq_file returns as many whole lines as fit in the buffer: a large buffer keeps a table with a few
# thousand sockets to a handful of syscalls.
READ_CHUNK_BYTES = 256 * 1024
# A /proc/net/tcp line is 150 bytes: 64 MiB is ~450,000 sockets. Beyond that the read itself would cost more than
# a check run may take, so stop instead of growing without bound.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# include/net/tcp_states.h
TCP_ESTABLISHED = 0x01
TCP_CLOSE_WAIT = 0x08
TCP_LISTEN = 0x0A
# include/uapi/linux/net.h: the `St` column of /proc/net/unix is a socket_state, not a TCP state.
SS_UNCONNECTED = 1
SS_CONNECTING = 2
SS_CONNECTED = 3
SS_DISCONNECTING = 4
# The `Flags` column carries __SO_ACCEPTCON (include/uapi/linux/net.h) for a socket in listen().
SO_ACCEPTCON = 0x00010000
SOCK_STREAM = 1


class NetError(Exception):
    """A socket table or fd directory of a process could not be read."""

    def __init__(self, pid: int, path: str, reason: str):
        super().__init__(f'{path}: {reason}')
        self.pid = pid
        self.path = path
        self.reason = reason


class NetProcessGone(NetError):
    """The process exited between discovery and reading: ordinary churn."""


class NetAccessDenied(NetError):
    """The Agent's user may not read this (fd/ of another user's process needs root or CAP_SYS_PTRACE)."""


class NetTableError(NetError):
    """The table could not be parsed or is larger than the configured cap."""


class NetParseError(ValueError):
    """A socket table line in an unknown format (raised by the pure parsers; readers add the file name)."""


@dataclass(frozen=True, slots=True)
class TcpRow:
    """One line of /proc/net/tcp or /proc/net/tcp6.

    `rx_queue` and `tx_queue` are what proc(5) prints: for a LISTEN socket `rx_queue` is the number of connections
    waiting for accept() (sk_ack_backlog, net/ipv4/tcp_ipv4.c get_tcp4_sock) and `tx_queue` is 0; for a connected
    socket both are byte counts. `inode` is 0 for sockets no process holds a file for: connections still in an
    accept queue, request and TIME_WAIT sockets, orphans.
    """

    family: int  # socket.AF_INET (from net/tcp) or socket.AF_INET6 (net/tcp6)
    local_ip: str  # as inet_ntop prints it: '127.0.0.1', '::1', '::ffff:127.0.0.1'
    local_port: int
    remote_ip: str
    remote_port: int
    state: int  # TCP_* from include/net/tcp_states.h
    tx_queue: int
    rx_queue: int
    uid: int
    inode: int


@dataclass(frozen=True, slots=True)
class UnixRow:
    """One line of /proc/net/unix (net/unix/af_unix.c unix_seq_show).

    `path` is None for an unbound socket, starts with '@' for an abstract one (the kernel prints its leading NUL, and
    any other NUL, as '@'), and is otherwise the bound path exactly as given to bind(), possibly relative. A server
    socket returned by accept() carries its listener's path; the connecting client does not.
    """

    refcount: int
    flags: int
    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    state: int  # SS_* socket state, see the constants above
    inode: int
    path: str | None

    @property
    def listening(self) -> bool:
        return bool(self.flags & SO_ACCEPTCON)


@dataclass(frozen=True)
class BindAddress:
    """A listener address the application was configured with, canonicalised for exact comparison."""

    family: int  # socket.AF_INET, socket.AF_INET6 or socket.AF_UNIX
    ip: str  # canonical textual IP ('0.0.0.0', '::', '::1'); '' for unix
    port: int  # 0 for unix
    path: str  # '' for TCP

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f'unix:{self.path}'
        if self.family == socket.AF_INET6:
            return f'[{self.ip}]:{self.port}'
        return f'{self.ip}:{self.port}'


@dataclass(frozen=True)
class ListenerStats:
    """The accept queue and accepted connections of one listening address of the application."""

    address: str  # '127.0.0.1:8000', '[::]:8000', 'unix:/run/app.sock'
    kind: str  # 'tcp', 'tcp6' or 'unix', like Gunicorn's `show listeners`
    listen_inodes: tuple[int, ...]  # one per listening socket; several with --reuse-port (one per worker)
    queued: int  # connections the kernel completed that wait for accept(), summed over listen_inodes
    in_flight: int  # accepted connections still open in the application (sync workers: requests being served)
    max_backlog: int | None  # accept-queue capacity summed over listen_inodes; None when not known for all of them
    # The inodes of those accepted connections: joined to a worker's fds, they tell which worker holds one. Left out
    # of comparisons: two reads of the same state agree on the counts, and inodes are a detail of each connection.
    accepted_inodes: frozenset[int] = field(default=frozenset(), compare=False, repr=False)


# Parsing


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
            remote_hex, remote_port_hex = fields[2].split(b':')
            tx_hex, rx_hex = fields[4].split(b':')
            local = ips.get(local_hex) or ips.setdefault(local_hex, _decode_ip(local_hex, byteorder))
            remote = ips.get(remote_hex) or ips.setdefault(remote_hex, _decode_ip(remote_hex, byteorder))
            rows.append(
                TcpRow(
                    family=local[0],
                    local_ip=local[1],
                    local_port=local_port,
                    remote_ip=remote[1],
                    remote_port=int(remote_port_hex, 16),
                    state=int(fields[3], 16),
                    tx_queue=int(tx_hex, 16),
                    rx_queue=int(rx_hex, 16),
                    uid=int(fields[7]),
                    inode=int(fields[9]),
                )
            )
        except (ValueError, IndexError) as exc:
            raise NetParseError(f'line {number}: {line[:160]!r}') from exc
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
            raise NetParseError(f'line {number}: {line[:160]!r}')
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


def parse_bind(text: str) -> BindAddress:
    """A listener address with a literal IP: '127.0.0.1:8000', '[::]:8000', 'tcp://0.0.0.0:80', 'unix:PATH'.

    Also accepts what Gunicorn prints for its listeners (`Listening at:` and the control socket's `show listeners`):
    'http://127.0.0.1:8000', 'https://[::1]:443'. `unix:` and `unix://` prefixes are stripped the way Gunicorn's
    util.parse_address does. Host names and a missing host or port are refused: filling them in would be a guess
    about which address the application bound.
    """
    if text.startswith('unix:'):
        path = text[len('unix:') :]
        path = path[2:] if path.startswith('//') else path
        if not path:
            raise ValueError(f'empty unix socket path in {text!r}')
        return BindAddress(socket.AF_UNIX, '', 0, path)
    scheme, sep, rest = text.partition('://')
    if not sep:
        rest = text
    elif scheme not in ('tcp', 'http', 'https'):
        raise ValueError(f'unsupported scheme in bind address {text!r}')
    host, sep, port_text = rest.rpartition(':')
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f'no port in bind address {text!r}')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    try:
        # inet_ntop canonicalises exactly as the table parser prints (ipaddress writes v4-mapped addresses
        # differently before Python 3.13).
        ip = socket.inet_ntop(family, socket.inet_pton(family, host))
    except OSError as exc:
        raise ValueError(f'bind address {text!r} is not a literal IP address or unix:PATH') from exc
    return BindAddress(family, ip, int(port_text), '')


# Matching rows to the application's listeners


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
    rows: Iterable[TcpRow],
    inodes: Collection[int],
    addresses: Collection[BindAddress],
    max_backlogs: Mapping[int, int] | None,
) -> list[ListenerStats]:
    wanted = {_tcp_key(a.family, a.ip, a.port) for a in addresses if a.family != socket.AF_UNIX}
    rows = list(rows)
    listeners: dict[tuple[int, str, int], list[TcpRow]] = {}
    for row in rows:
        if row.state != TCP_LISTEN:
            continue
        key = _tcp_key(row.family, row.local_ip, row.local_port)
        if row.inode in inodes or key in wanted:
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
        address = str(BindAddress(family, found[0].local_ip, key[2], ''))
        listen_inodes = tuple(sorted(r.inode for r in found))
        stats.append(
            ListenerStats(
                address=address,
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
    rows: Iterable[UnixRow],
    inodes: Collection[int],
    addresses: Collection[BindAddress],
    max_backlogs: Mapping[int, int] | None,
) -> list[ListenerStats]:
    wanted = {a.path for a in addresses if a.family == socket.AF_UNIX}
    rows = [r for r in rows if r.path is not None and r.type == SOCK_STREAM]
    listeners: dict[str, list[int]] = {}
    for row in rows:
        if row.listening and (row.inode in inodes or row.path in wanted):
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


def listener_stats(
    tcp: Iterable[TcpRow] = (),
    unix: Iterable[UnixRow] = (),
    *,
    inodes: Collection[int] | None = None,
    addresses: Collection[str | BindAddress] | None = None,
    max_backlogs: Mapping[int, int] | None = None,
) -> list[ListenerStats]:
    """Queue figures for the application's listeners, identified exactly by socket inodes and/or bind addresses.

    `inodes` may hold every socket inode of the application's processes (see `socket_inodes`): the listening ones
    are picked out. `addresses` are bind strings (see `parse_bind`); a wildcard address matches only the wildcard
    listener, never a listener on a specific address of the same port. With neither, nothing is returned: which
    listener is the application's is never guessed. `max_backlogs` maps listening inodes to their capacity (from
    sock_diag, which /proc does not show).

    Listeners that were identified but have no row (not bound yet, or another network namespace) are left out.
    For unix sockets, connections are attributed by path: two listening sockets bound to the same path (a stale
    one whose file was replaced) share them.

    A Gunicorn master's inodes include its control socket (25.1+, a unix listener with backlog 100, bound a moment
    after the workers boot): drop that address from the result, or identify the listeners by address.
    """
    inode_set = frozenset(inodes or ())
    parsed = [a if isinstance(a, BindAddress) else parse_bind(a) for a in addresses or ()]
    if not inode_set and not parsed:
        return []
    return _tcp_stats(tcp, inode_set, parsed, max_backlogs) + _unix_stats(unix, inode_set, parsed, max_backlogs)


# Readers


def _net_error(exc: OSError, pid: int, path: str) -> NetError:
    """The one mapping of a failed read of a process's net table: gone (ESRCH: the task died while the kernel was
    producing the file) or denied."""
    if isinstance(exc, (FileNotFoundError, ProcessLookupError)) or exc.errno == errno.ESRCH:
        return NetProcessGone(pid, path, 'process gone')
    if isinstance(exc, PermissionError):
        return NetAccessDenied(pid, path, 'permission denied')
    return NetAccessDenied(pid, path, os.strerror(exc.errno or 0))


def _read_whole(path: str, pid: int, max_bytes: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            size = 0
            while chunk := os.read(fd, READ_CHUNK_BYTES):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise NetTableError(pid, path, f'larger than {max_bytes} bytes')
        finally:
            os.close(fd)
    except OSError as exc:
        raise _net_error(exc, pid, path) from exc
    return b''.join(chunks)


def _proc_path(root: str, pid: int, *parts: str) -> str:
    return '/'.join((root.rstrip('/') or '', str(pid), *parts))


def _read_tcp_tables(root: str, pid: int, families: Collection[int], max_bytes: int) -> list[tuple[str, bytes]]:
    tables = []
    for name, family in (('tcp', socket.AF_INET), ('tcp6', socket.AF_INET6)):
        if family not in families:
            continue
        path = _proc_path(root, pid, 'net', name)
        try:
            tables.append((path, _read_whole(path, pid, max_bytes)))
        except NetProcessGone:
            # tcp6 is absent when IPv6 is disabled (ipv6.disable=1); the process is gone only if its directory is.
            if name == 'tcp6' and os.path.isdir(_proc_path(root, pid)):
                continue
            raise
    return tables


def _parse_tables(pid: int, tables: list[tuple[str, bytes]], local_ports: Collection[int] | None) -> list[TcpRow]:
    rows = []
    for path, data in tables:
        try:
            rows += parse_net_tcp(data, local_ports=local_ports)
        except NetParseError as exc:
            raise NetTableError(pid, path, str(exc)) from exc
    return rows


def read_net_tcp(
    root: str,
    pid: int,
    *,
    local_ports: Collection[int] | None = None,
    families: Collection[int] = (socket.AF_INET, socket.AF_INET6),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[TcpRow]:
    """TCP sockets (IPv4 then IPv6) of the network namespace PID lives in, from `<root>/<pid>/net/tcp{,6}`.

    Most of the cost is in the kernel, not here: every read() of these files restarts a walk of the TCP hash tables
    and returns one page of rows, and the walk to the end happens again for the read that reports EOF (measured
    ~2 ms per file on an idle host with 262,144 established-hash buckets). Pass `families` to skip a table the
    listeners cannot be in, and `local_ports` to build rows only for the listeners' ports.
    """
    return _parse_tables(pid, _read_tcp_tables(root, pid, families, max_bytes), local_ports)


def _listening_ports(pid: int, tables: list[tuple[str, bytes]], inodes: Collection[int]) -> set[int]:
    """Ports of the LISTEN rows whose inode is in `inodes`, found without building rows for the whole table."""
    ports = set()
    for path, data in tables:
        for line in data.split(b'\n')[1:]:
            fields = line.split()
            # proc(5): field 4 is `st` (0A = LISTEN), field 10 the inode.
            if len(fields) < 10 or fields[3] != b'0A':
                continue
            try:
                if int(fields[9]) in inodes:
                    ports.add(int(fields[1].rpartition(b':')[2], 16))
            except ValueError as exc:
                raise NetTableError(pid, path, f'unparsable LISTEN row {line[:160]!r}') from exc
    return ports


def read_listener_stats(
    root: str,
    pid: int,
    *,
    inodes: Collection[int] | None = None,
    addresses: Collection[str | BindAddress] | None = None,
    max_backlogs: Mapping[int, int] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[ListenerStats]:
    """`listener_stats` for the network namespace of PID, reading only the tables and rows the listeners need.

    Reads net/tcp and/or net/tcp6 only for TCP listeners of that family (both when identified by inode), net/unix
    only for unix listeners or inodes, and builds rows only for the listeners' ports: on a host with thousands of
    connections that is most of the Python-side cost.
    """
    inode_set = frozenset(inodes or ())
    parsed = [a if isinstance(a, BindAddress) else parse_bind(a) for a in addresses or ()]
    if not inode_set and not parsed:
        return []
    families = {a.family for a in parsed} - {socket.AF_UNIX}
    if inode_set:
        families |= {socket.AF_INET, socket.AF_INET6}
    tcp: list[TcpRow] = []
    if families:
        tables = _read_tcp_tables(root, pid, families, max_bytes)
        ports = {a.port for a in parsed if a.family != socket.AF_UNIX}
        if inode_set:
            ports |= _listening_ports(pid, tables, inode_set)
        tcp = _parse_tables(pid, tables, ports)
    unix: list[UnixRow] = []
    if inode_set or any(a.family == socket.AF_UNIX for a in parsed):
        unix = read_net_unix(root, pid, max_bytes=max_bytes)
    return listener_stats(tcp, unix, inodes=inode_set, addresses=parsed, max_backlogs=max_backlogs)


def _read_listening_prefix(path: str, pid: int, max_bytes: int) -> bytes:
    """The header and the LISTEN rows at the start of a tcp table, read a kernel page at a time up to another row."""
    kept: list[bytes] = []
    size = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Each read returns whole rows (seq_file never splits a record), the header first.
            while chunk := os.read(fd, READ_CHUNK_BYTES):
                for line in chunk.split(b'\n'):
                    fields = line.split()
                    if len(fields) > 3 and fields[0] != b'sl' and fields[3] != b'0A':
                        return b'\n'.join(kept)
                    kept.append(line)
                size += len(chunk)
                if size > max_bytes:
                    raise NetTableError(pid, path, f'more than {max_bytes} bytes of LISTEN rows')
        finally:
            os.close(fd)
    except OSError as exc:
        raise _net_error(exc, pid, path) from exc
    return b'\n'.join(kept)


def read_net_tcp_listening(
    root: str,
    pid: int,
    *,
    families: Collection[int] = (socket.AF_INET, socket.AF_INET6),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[TcpRow]:
    """Only the LISTEN rows of `<root>/<pid>/net/tcp{,6}`, without paying for the established table.

    tcp_seq_start walks the listening hash before the established one (net/ipv4/tcp_ipv4.c), so LISTEN rows come
    first; closing the file at the first other row spares the walk of the established hash, which is most of the
    cost of a whole read (measured: 0.19 ms instead of 6 ms with 600 unrelated connections on the host).
    """
    rows: list[TcpRow] = []
    for name, family in (('tcp', socket.AF_INET), ('tcp6', socket.AF_INET6)):
        if family not in families:
            continue
        path = _proc_path(root, pid, 'net', name)
        try:
            data = _read_listening_prefix(path, pid, max_bytes)
        except NetProcessGone:
            if name == 'tcp6' and os.path.isdir(_proc_path(root, pid)):
                continue  # IPv6 disabled
            raise
        try:
            rows += parse_net_tcp(data)
        except NetParseError as exc:
            raise NetTableError(pid, path, str(exc)) from exc
    return rows


def read_net_unix(root: str, pid: int, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[UnixRow]:
    """Unix sockets of the network namespace PID lives in, from `<root>/<pid>/net/unix`."""
    path = _proc_path(root, pid, 'net', 'unix')
    data = _read_whole(path, pid, max_bytes)
    try:
        return parse_net_unix(data)
    except NetParseError as exc:
        raise NetTableError(pid, path, str(exc)) from exc


def socket_inodes(root: str, pid: int) -> frozenset[int]:
    """Inodes of the sockets PID holds open, from the `socket:[N]` links in `<root>/<pid>/fd`.

    Needs ptrace read access (root or CAP_SYS_PTRACE for another user's process, and even for the same user once a
    process dropped privileges and became non-dumpable): raises NetAccessDenied, which callers should log once.
    """
    fd_dir = _proc_path(root, pid, 'fd')
    try:
        names = os.listdir(fd_dir)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise NetProcessGone(pid, fd_dir, 'process gone') from exc
    except PermissionError as exc:
        raise NetAccessDenied(pid, fd_dir, 'permission denied (needs root or CAP_SYS_PTRACE)') from exc
    except OSError as exc:
        raise NetAccessDenied(pid, fd_dir, os.strerror(exc.errno or 0)) from exc
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f'{fd_dir}/{name}')
        except FileNotFoundError:
            continue  # closed since the listing
        except PermissionError as exc:
            raise NetAccessDenied(pid, fd_dir, 'permission denied (needs root or CAP_SYS_PTRACE)') from exc
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(int(target[8:-1]))
    return frozenset(inodes)
