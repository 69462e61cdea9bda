"""Listening sockets and their accept queues through NETLINK_SOCK_DIAG (sock_diag(7), what `ss -l` uses).

/proc/net/tcp and /proc/net/unix show how many connections wait for accept() but not the queue's capacity (the
listen() backlog, capped by net.core.somaxconn). The kernel reports both here: for a listening unix socket
`udiag_rqueue` is the number of queued connections and `udiag_wqueue` the maximum (net/unix/diag.c
sk_diag_show_rqlen); for a listening TCP socket `idiag_rqueue`/`idiag_wqueue` are sk_ack_backlog/sk_max_ack_backlog
(net/ipv4/tcp_diag.c tcp_diag_get_info). `ss -l` prints them as Recv-Q and Send-Q. No privileges are needed.

Network namespaces: the kernel answers for the namespace of the netlink socket, i.e. of the calling process. The
sockets of an application in another namespace (a container, seen from an Agent on the host) are simply absent;
reaching them would need setns(2), which needs CAP_SYS_ADMIN. Callers join these results to /proc rows by socket
inode (unique system-wide), so a socket from another namespace just has no figure here: fall back to the
/proc/PID/net tables (queue length without capacity). `ProcFS.shares_network_namespace` tells the caller in advance.

Everything is bounded: one deadline for the whole exchange, a cap on the bytes received, and any malformed or
truncated message raises SockDiagProtocolError instead of being skipped or waited on.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterable

from .rows import TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN, SocketTableError, TcpRow

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
# include/uapi/linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
# include/uapi/linux/unix_diag.h
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
IPPROTO_TCP = 6
# include/uapi/linux/inet_diag.h: the request attribute carrying a filter program, and the operations it uses.
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
# A filter of this many ports is 5 KiB, far below the u16 jump offsets' limit and far above any Gunicorn's binds.
MAX_FILTER_PORTS = 256

DEFAULT_TIMEOUT_S = 1.0
# A unix_diag record with a name and RQLEN is ~150 bytes, an inet_diag one ~90: 4 MiB is tens of thousands of
# listening sockets, far more than any host has.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# netlink_recvmsg caps the size of the dump skbs it builds at 32 KiB (SKB_WITH_OVERHEAD(32768)), so one message batch
# always fits; a larger one is reported by MSG_TRUNC and treated as an error.
RECV_BUFFER_BYTES = 64 * 1024

_NLMSGHDR = struct.Struct('=IHHII')  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
_NLMSGERR = struct.Struct('=i')  # the error code heading an NLMSG_ERROR payload (and an NLMSG_DONE one)
_RTATTR = struct.Struct('=HH')  # rta_len, rta_type
# struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_REQ = struct.Struct('=BBHIIIII')
# struct unix_diag_msg: family, type, state, pad, ino, cookie[2]
_UNIX_DIAG_MSG = struct.Struct('=BBBBIII')
_UNIX_DIAG_RQLEN = struct.Struct('=II')  # udiag_rqueue, udiag_wqueue
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes): dump all.
_INET_DIAG_REQ_V2 = struct.Struct('=BBBBI48x')
# struct inet_diag_msg: family, state, timer, retrans, sockid {sport, dport (big-endian), src[16], dst[16], if,
# cookie[2]}, expires, rqueue, wqueue, uid, inode.
_INET_DIAG_MSG = struct.Struct('=BBBB2s2s16s16sIIIIIIII')
# struct inet_diag_bc_op: code, yes, no (byte offsets to jump by when the test is true / false).
_BC_OP = struct.Struct('=BBH')

_sequence = itertools.count(1)


class SockDiagError(SocketTableError):
    """The kernel did not answer a sock_diag dump as expected."""


class SockDiagUnsupported(SockDiagError):
    """No netlink or no unix_diag/inet_diag in this kernel (CONFIG_UNIX_DIAG / CONFIG_INET_DIAG), or denied."""


class SockDiagTimeout(SockDiagError):
    """The dump did not complete before the deadline."""


class SockDiagProtocolError(SockDiagError):
    """A malformed, truncated or oversized answer."""


# Wire format


def _request(payload: bytes, seq: int) -> bytes:
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload
    )


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _messages(batch: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split one received batch into (type, flags, seq, payload); a message running past the batch is an error."""
    out = []
    offset = 0
    while offset < len(batch):
        if len(batch) - offset < _NLMSGHDR.size:
            raise SockDiagProtocolError(f'truncated netlink header at offset {offset} of {len(batch)}')
        length, msg_type, flags, seq, _pid = _NLMSGHDR.unpack_from(batch, offset)
        if length < _NLMSGHDR.size or offset + length > len(batch):
            raise SockDiagProtocolError(f'netlink message of length {length} at offset {offset} of {len(batch)}')
        out.append((msg_type, flags, seq, batch[offset + _NLMSGHDR.size : offset + length]))
        offset += _align4(length)
    return out


def _attributes(data: bytes) -> dict[int, bytes]:
    attrs = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, attr_type = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            raise SockDiagProtocolError(f'attribute {attr_type} of length {length} at offset {offset} of {len(data)}')
        attrs[attr_type] = data[offset + _RTATTR.size : offset + length]
        offset += _align4(length)
    return attrs


def _exchange(sock: socket.socket, request: bytes, seq: int, timeout_s: float, max_bytes: int) -> list[bytes]:
    """Send one dump request on a connected socket and return the payloads of its answer, up to NLMSG_DONE.

    `sock` is a netlink socket in production and one end of a SOCK_DGRAM socketpair in the tests (both keep message
    boundaries and report MSG_TRUNC), so the bounds are exercised on a real socket.
    """
    deadline = time.monotonic() + timeout_s
    sock.settimeout(timeout_s)
    try:
        sock.send(request)
        received = 0
        payloads = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SockDiagTimeout(f'sock_diag dump not finished after {timeout_s:.1f}s')
            sock.settimeout(remaining)
            batch, _, msg_flags, _ = sock.recvmsg(RECV_BUFFER_BYTES)
            if msg_flags & socket.MSG_TRUNC:
                raise SockDiagProtocolError(f'netlink batch larger than {RECV_BUFFER_BYTES} bytes was truncated')
            if not batch:
                raise SockDiagProtocolError('empty read before NLMSG_DONE')
            received += len(batch)
            if received > max_bytes:
                raise SockDiagProtocolError(f'sock_diag answer larger than {max_bytes} bytes')
            for msg_type, _flags, msg_seq, payload in _messages(batch):
                if msg_seq != seq:
                    continue  # not an answer to this request
                if msg_type == NLMSG_DONE:
                    # A dump that failed midway ends with a negative errno in DONE (netlink_dump_done).
                    if len(payload) >= _NLMSGERR.size and _NLMSGERR.unpack_from(payload)[0] < 0:
                        code = -_NLMSGERR.unpack_from(payload)[0]
                        raise SockDiagError(f'sock_diag dump failed: {os.strerror(code)}')
                    return payloads
                if msg_type == NLMSG_ERROR:
                    if len(payload) < _NLMSGERR.size:
                        raise SockDiagProtocolError('truncated NLMSG_ERROR')
                    code = -_NLMSGERR.unpack_from(payload)[0]
                    if code == 0:
                        continue  # an acknowledgement
                    # sock_diag answers ENOENT when no handler is registered for the family (module not built).
                    kind = SockDiagUnsupported if code in (errno.ENOENT, errno.EPERM, errno.EACCES) else SockDiagError
                    raise kind(f'sock_diag request refused: {os.strerror(code)}')
                if msg_type == SOCK_DIAG_BY_FAMILY:
                    payloads.append(payload)
    except TimeoutError as exc:
        raise SockDiagTimeout(f'sock_diag dump not finished after {timeout_s:.1f}s') from exc
    except OSError as exc:
        raise SockDiagError(f'sock_diag exchange failed: {exc}') from exc


class Session:
    """A netlink socket kept open across dumps.

    Opening, addressing and closing a socket for every dump is three system calls and the Python objects around
    them on each run (about 60 us of a run's CPU after the check's sleep). A dump that fails part-way may leave
    answers queued on the socket, so any failure closes it and the next dump opens a fresh one.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def dump(self, payload: bytes, timeout_s: float, max_bytes: int) -> list[bytes]:
        sock = self._sock if self._sock is not None else self._open()
        seq = next(_sequence)
        try:
            return _exchange(sock, _request(payload, seq), seq, timeout_s, max_bytes)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open(self) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        except OSError as exc:  # EAFNOSUPPORT / EPROTONOSUPPORT, or seccomp in a sandbox
            raise SockDiagUnsupported(f'cannot open a NETLINK_SOCK_DIAG socket: {exc}') from exc
        try:
            sock.connect((0, 0))  # the kernel
        except OSError as exc:
            sock.close()
            raise SockDiagUnsupported(f'cannot address the kernel over netlink: {exc}') from exc
        self._sock = sock
        return sock


def _dump(payload: bytes, timeout_s: float, max_bytes: int, session: Session | None = None) -> list[bytes]:
    """One dump, on `session`'s socket when given, else on a socket of its own."""
    if session is not None:
        return session.dump(payload, timeout_s, max_bytes)
    once = Session()
    try:
        return once.dump(payload, timeout_s, max_bytes)
    finally:
        once.close()


def parse_unix_diag(payload: bytes) -> tuple[int, int]:
    """The inode and accept-queue capacity (udiag_wqueue, `ss -lx` Send-Q) of a listening unix socket's message."""
    if len(payload) < _UNIX_DIAG_MSG.size:
        raise SockDiagProtocolError(f'unix_diag_msg of {len(payload)} bytes')
    inode = _UNIX_DIAG_MSG.unpack_from(payload)[4]
    rqlen = _attributes(payload[_UNIX_DIAG_MSG.size :]).get(UNIX_DIAG_RQLEN)
    if rqlen is None or len(rqlen) < _UNIX_DIAG_RQLEN.size:
        raise SockDiagProtocolError(f'unix_diag answer for inode {inode} without UNIX_DIAG_RQLEN')
    return inode, _UNIX_DIAG_RQLEN.unpack_from(rqlen)[1]


def _inet_ip(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise SockDiagProtocolError(f'inet_diag answer of family {family}')


def parse_inet_diag(payload: bytes) -> TcpRow:
    """A TCP socket's message as the row /proc/net/tcp would print, except that a LISTEN row's `tx_queue` holds the
    accept queue's capacity (idiag_wqueue), which /proc does not show."""
    if len(payload) < _INET_DIAG_MSG.size:
        raise SockDiagProtocolError(f'inet_diag_msg of {len(payload)} bytes')
    family, state, _timer, _retrans, sport, _dport, src, _dst, *_, rqueue, wqueue, uid, inode = (
        _INET_DIAG_MSG.unpack_from(payload)
    )
    return TcpRow(
        family,
        _inet_ip(family, src),
        int.from_bytes(sport, 'big'),
        state,
        wqueue,
        rqueue,
        uid,
        inode,
    )


def local_port_filter(ports: Iterable[int]) -> bytes:
    """inet_diag bytecode that accepts exactly the sockets whose local port is one of `ports`.

    The kernel runs it on each socket before building a message (inet_diag_bc_run), so a dump returns only these
    sockets however many others the host has. Each port is tested by S_GE and S_LE (S_EQ only exists since 4.16);
    ports are ORed the way `ss` compiles `or`: a match falls through to a JMP to the end (accept: the program must
    end exactly at its last byte), a mismatch jumps to the next port's test, and past the end (reject) after the
    last. inet_diag_bc_audit refuses a jump that does not land on an operation reachable through `yes` offsets,
    hence the JMP (whose `yes` of 4 keeps the next test reachable) instead of jumping straight to the end.
    """
    wanted = sorted(set(ports))
    if not wanted or len(wanted) > MAX_FILTER_PORTS or not all(0 < p < 65536 for p in wanted):
        raise ValueError(f'a port filter needs 1 to {MAX_FILTER_PORTS} ports in 1..65535, got {wanted[:8]}')
    test = 2 * _BC_OP.size  # an operation and the operand holding its port
    block = 2 * test  # S_GE then S_LE
    total = len(wanted) * (block + _BC_OP.size) - _BC_OP.size
    program = b''
    for index, port in enumerate(wanted):
        last = index == len(wanted) - 1
        start = len(program)
        # Offsets are relative to the operation; "past the end" is the remaining length plus 4.
        for offset, code in ((0, INET_DIAG_BC_S_GE), (test, INET_DIAG_BC_S_LE)):
            here = start + offset
            miss = total - here + 4 if last else start + block + _BC_OP.size - here
            program += _BC_OP.pack(code, test, miss) + _BC_OP.pack(0, 0, port)
        if not last:
            program += _BC_OP.pack(INET_DIAG_BC_JMP, _BC_OP.size, total - len(program))
    return program


# Public API


def unix_backlogs(
    timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES, session: Session | None = None
) -> dict[int, int]:
    """Listening unix socket inode -> accept-queue capacity, for every one of the caller's network namespace."""
    request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0, UDIAG_SHOW_RQLEN, 0, 0)
    return dict(parse_unix_diag(p) for p in _dump(request, timeout_s, max_bytes, session))


def tcp_sockets(
    family: int,
    ports: Iterable[int],
    states: Iterable[int] = (TCP_LISTEN, TCP_ESTABLISHED, TCP_CLOSE_WAIT),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    session: Session | None = None,
) -> list[TcpRow]:
    """TCP sockets of one family of the caller's network namespace whose local port is one of `ports`.

    One dump walks the whole established hash table once (about 0.2 ms of kernel time with 262,144 buckets, twice
    that right after the check's sleep, against about 2 ms per read pass of /proc/net/tcp, which walks it again for
    the read that reports EOF), and the port filter keeps the kernel from building messages for other sockets. A
    listener and the connections on its port come from the same walk.
    """
    request = _tcp_request(family, tuple(sorted(set(ports))), tuple(sorted(set(states))))
    return [parse_inet_diag(p) for p in _dump(request, timeout_s, max_bytes, session)]


@functools.lru_cache(maxsize=64)
def _tcp_request(family: int, ports: tuple[int, ...], states: tuple[int, ...]) -> bytes:
    # The same listeners are asked about on every run: build their filter program once.
    mask = 0
    for state in states:
        mask |= 1 << state
    bytecode = local_port_filter(ports)
    attribute = _RTATTR.pack(_RTATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    return _INET_DIAG_REQ_V2.pack(family, IPPROTO_TCP, 0, 0, mask) + attribute
