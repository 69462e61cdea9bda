"""NETLINK_SOCK_DIAG: the wire format against a fake kernel on a socketpair; real dumps of this process's sockets."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources.procfs import ProcFS
from datadog_checks.gunicorn.sources.sockets import netlink as sock_diag
from datadog_checks.gunicorn.sources.sockets.listener_stats import listener_stats
from datadog_checks.gunicorn.sources.sockets.proc_net import read_net_tcp, read_net_unix
from datadog_checks.gunicorn.sources.sockets.rows import TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN, TcpRow

SEQ = 7
DONE = sock_diag.NLMSG_DONE
ERROR = sock_diag.NLMSG_ERROR
RECORD = sock_diag.SOCK_DIAG_BY_FAMILY
NLM_F_MULTI = 0x02
UNIX_DIAG_NAME = 0  # include/uapi/linux/unix_diag.h
PROC = ProcFS('/proc')


def nlmsg(msg_type: int, payload: bytes = b'', seq: int = SEQ, length: int | None = None) -> bytes:
    size = 16 + len(payload) if length is None else length
    body = struct.pack('=IHHII', size, msg_type, NLM_F_MULTI, seq, 0) + payload
    return body + b'\0' * (-len(body) % 4)


def rta(attr_type: int, data: bytes, length: int | None = None) -> bytes:
    size = 4 + len(data) if length is None else length
    raw = struct.pack('=HH', size, attr_type) + data
    return raw + b'\0' * (-len(raw) % 4)


def unix_record(inode: int, name: bytes | None, queued: int = 0, max_backlog: int = 5) -> bytes:
    head = struct.pack('=BBBBIII', socket.AF_UNIX, socket.SOCK_STREAM, 10, 0, inode, 0, 0)
    attrs = b'' if name is None else rta(UNIX_DIAG_NAME, name)  # asked for no more, and skipped if sent
    return head + attrs + rta(sock_diag.UNIX_DIAG_RQLEN, struct.pack('=II', queued, max_backlog))


def errmsg(code: int) -> bytes:
    return struct.pack('=i', code) + struct.pack('=IHHII', 40, RECORD, 0x301, SEQ, 0)


@pytest.fixture
def kernel():
    """A fake kernel: the check's end and the end the test writes answers to, keeping datagram boundaries."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        yield ours, theirs


def exchange(ours, timeout_s: float = 1.0, max_bytes: int = sock_diag.DEFAULT_MAX_BYTES) -> list[bytes]:
    return sock_diag._exchange(ours, sock_diag._request(b'payload', SEQ), SEQ, timeout_s, max_bytes)


# Wire format


def test_structures_have_the_kernels_sizes():
    # include/uapi/linux/{netlink,unix_diag,inet_diag}.h
    assert sock_diag._NLMSGHDR.size == 16
    assert sock_diag._UNIX_DIAG_REQ.size == 24
    assert sock_diag._UNIX_DIAG_MSG.size == 16
    assert sock_diag._INET_DIAG_REQ_V2.size == 56
    assert sock_diag._INET_DIAG_MSG.size == 72


def test_the_request_is_a_dump_by_family(kernel):
    ours, theirs = kernel
    theirs.send(nlmsg(DONE, struct.pack('=i', 0)))
    exchange(ours)
    request = theirs.recv(1024)
    assert struct.unpack_from('=IHHII', request) == (16 + 7, RECORD, 0x301, SEQ, 0)
    assert request[16:] == b'payload'


def test_a_multipart_answer_is_read_up_to_done(kernel):
    ours, theirs = kernel
    first, second, third = unix_record(1, b'/a\0'), unix_record(2, b'\0b'), unix_record(3, None)
    theirs.send(nlmsg(RECORD, first) + nlmsg(ERROR, errmsg(0)))  # an acknowledgement is not an error
    theirs.send(nlmsg(RECORD, b'stale', seq=SEQ - 1) + nlmsg(RECORD, second))  # another request's answer is skipped
    theirs.send(nlmsg(RECORD, third) + nlmsg(DONE, struct.pack('=i', 0)))
    theirs.send(nlmsg(RECORD, unix_record(4, b'/after-done\0')))
    payloads = exchange(ours)
    assert [sock_diag.parse_unix_diag(p) for p in payloads] == [(1, 5), (2, 5), (3, 5)]


@pytest.mark.parametrize(
    'code, error',
    [
        (-errno.ENOENT, sock_diag.SockDiagUnsupported),  # no unix_diag / inet_diag handler in this kernel
        (-errno.EACCES, sock_diag.SockDiagUnsupported),
        (-errno.EINVAL, sock_diag.SockDiagError),
    ],
)
def test_nlmsg_error_is_raised(kernel, code, error):
    ours, theirs = kernel
    theirs.send(nlmsg(RECORD, unix_record(1, b'/a\0')) + nlmsg(ERROR, errmsg(code)))
    with pytest.raises(error, match=os.strerror(-code)) as info:
        exchange(ours)
    assert type(info.value) is error


def test_a_dump_that_failed_midway_says_so_in_done(kernel):
    ours, theirs = kernel
    theirs.send(nlmsg(DONE, struct.pack('=i', -errno.EMSGSIZE)))
    with pytest.raises(sock_diag.SockDiagError, match=os.strerror(errno.EMSGSIZE)):
        exchange(ours)


@pytest.mark.parametrize(
    'batch, message',
    [
        (b'\x10\0\0\0\x14\0', 'truncated netlink header'),
        (nlmsg(RECORD, b'abcd', length=0), 'length 0'),  # would never advance
        (nlmsg(RECORD, b'abcd', length=15), 'length 15'),
        (nlmsg(RECORD, b'abcd', length=400), 'length 400'),  # runs past the batch
        (nlmsg(RECORD, b'abcd') + b'\x01\x02', 'truncated netlink header'),
        (nlmsg(ERROR, b'\0\0'), 'truncated NLMSG_ERROR'),
        (b'', 'empty read'),
    ],
)
def test_malformed_batches_are_protocol_errors(kernel, batch, message):
    ours, theirs = kernel
    theirs.send(batch)
    with pytest.raises(sock_diag.SockDiagProtocolError, match=message):
        exchange(ours)


def test_a_batch_larger_than_the_buffer_is_reported_truncated(kernel):
    ours, theirs = kernel
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * sock_diag.RECV_BUFFER_BYTES)
    theirs.send(nlmsg(RECORD, b'x' * sock_diag.RECV_BUFFER_BYTES))
    with pytest.raises(sock_diag.SockDiagProtocolError, match='truncated'):
        exchange(ours)


def test_the_answer_is_capped_in_bytes(kernel):
    ours, theirs = kernel
    for _ in range(4):
        theirs.send(nlmsg(RECORD, unix_record(1, b'/a' * 200 + b'\0')))
    theirs.send(nlmsg(DONE, struct.pack('=i', 0)))
    with pytest.raises(sock_diag.SockDiagProtocolError, match='larger than 1000 bytes'):
        exchange(ours, max_bytes=1000)


def test_a_silent_kernel_times_out_on_the_deadline(kernel):
    ours, theirs = kernel
    theirs.send(nlmsg(RECORD, unix_record(1, b'/a\0')))  # and then nothing: no NLMSG_DONE
    started = time.monotonic()
    with pytest.raises(sock_diag.SockDiagTimeout):
        exchange(ours, timeout_s=0.2)
    assert 0.15 < time.monotonic() - started < 1.0


def test_an_endless_answer_stops_on_the_deadline(kernel):
    ours, theirs = kernel
    stop = threading.Event()
    theirs.settimeout(0.1)

    def flood():
        record = nlmsg(RECORD, unix_record(1, b'/a\0'))
        while not stop.is_set():
            try:
                theirs.send(record)
            except TimeoutError:
                continue
            except OSError:
                return

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    started = time.monotonic()
    try:
        with pytest.raises(sock_diag.SockDiagTimeout):
            exchange(ours, timeout_s=0.3, max_bytes=1 << 40)
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        writer.join(5)


@pytest.mark.parametrize(
    'payload, message',
    [
        (b'\0' * 15, 'unix_diag_msg of 15 bytes'),
        (struct.pack('=BBBBIII', 1, 1, 10, 0, 9, 0, 0) + rta(0, b'/a\0'), 'without UNIX_DIAG_RQLEN'),
        (struct.pack('=BBBBIII', 1, 1, 10, 0, 9, 0, 0) + rta(4, b'\0' * 4), 'without UNIX_DIAG_RQLEN'),
        (struct.pack('=BBBBIII', 1, 1, 10, 0, 9, 0, 0) + rta(0, b'/a\0', length=2), 'length 2'),
        (struct.pack('=BBBBIII', 1, 1, 10, 0, 9, 0, 0) + rta(0, b'/a\0', length=64), 'length 64'),
    ],
)
def test_malformed_unix_records(payload, message):
    with pytest.raises(sock_diag.SockDiagProtocolError, match=message):
        sock_diag.parse_unix_diag(payload)


def test_inet_records():
    src = socket.inet_pton(socket.AF_INET6, '::1')
    record = struct.pack('=BBBB', socket.AF_INET6, 10, 0, 0) + struct.pack('>HH', 8000, 0) + src + bytes(16)
    record += struct.pack('=IIIIIIII', 0, 0, 0, 0, 3, 5, 1000, 4242)
    # A LISTEN socket's capacity (idiag_wqueue) is its row's tx_queue, its queue (idiag_rqueue) the rx_queue.
    assert sock_diag.parse_inet_diag(record) == TcpRow(socket.AF_INET6, '::1', 8000, 10, 5, 3, 1000, 4242)
    with pytest.raises(sock_diag.SockDiagProtocolError, match='71 bytes'):
        sock_diag.parse_inet_diag(record[:71])
    with pytest.raises(sock_diag.SockDiagProtocolError, match='family 1'):
        sock_diag.parse_inet_diag(b'\x01' + record[1:])


# The real kernel


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _unix_server(path: str, backlog: int, clients: int) -> tuple[socket.socket, list[socket.socket]]:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(backlog)
    connected = []
    for _ in range(clients):
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        connected.append(client)
    return server, connected


def _tcp_server(ip: str, backlog: int, clients: int) -> tuple[socket.socket, list[socket.socket]]:
    server = socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)
    server.bind((ip, 0))
    server.listen(backlog)
    return server, [socket.create_connection(server.getsockname()[:2], timeout=5) for _ in range(clients)]


def _close(*socks) -> None:
    for sock in socks:
        sock.close()


def _ss(*args: str) -> str | None:
    ss = shutil.which('ss')
    if ss is None:
        return None
    return subprocess.run([ss, *args], capture_output=True, text=True, timeout=10, check=True).stdout


def test_unix_listener_that_never_accepts(tmp_path):
    path = str(tmp_path / 'app with spaces.sock')
    server, clients = _unix_server(path, 5, 3)
    name = f'gunicorn sock_diag test {os.getpid()}'
    abstract, abstract_clients = _unix_server('\0' + name, 2, 1)
    try:
        backlogs = sock_diag.unix_backlogs()
        assert (backlogs[_inode(server)], backlogs[_inode(abstract)]) == (5, 2)
        # The same figures as /proc/PID/net/unix, plus the capacity the table does not have.
        (stats,) = listener_stats([], read_net_unix(PROC, os.getpid()), [parse_bind('unix:' + path)], backlogs)
        assert (stats.queued, stats.in_flight, stats.max_backlog) == (3, 0, 5)
    finally:
        _close(server, abstract, *clients, *abstract_clients)


@pytest.mark.parametrize('ip', ['127.0.0.1', '::1'])
def test_tcp_listener_that_never_accepts(ip):
    server, clients = _tcp_server(ip, 5, 3)
    try:
        family = socket.AF_INET6 if ':' in ip else socket.AF_INET
        port = server.getsockname()[1]
        (listening,) = sock_diag.tcp_sockets(family, [port], [TCP_LISTEN])
        assert listening == TcpRow(family, ip, port, TCP_LISTEN, 5, 3, 0, _inode(server))
        address = f'[{ip}]:{port}' if ':' in ip else f'{ip}:{port}'
        rows = read_net_tcp(PROC, os.getpid())
        (stats,) = listener_stats(rows, [], [parse_bind(address)], {listening.inode: listening.tx_queue})
        assert (stats.queued, stats.in_flight, stats.max_backlog) == (3, 0, 5)
    finally:
        _close(server, *clients)


def test_the_backlog_is_capped_by_somaxconn(tmp_path):
    # listen(2) silently truncates the backlog to net.core.somaxconn of the socket's namespace.
    with open('/proc/sys/net/core/somaxconn') as f:
        somaxconn = int(f.read())
    server, _ = _unix_server(str(tmp_path / 'big.sock'), somaxconn + 1000, 0)
    tcp, _ = _tcp_server('127.0.0.1', somaxconn + 1000, 0)
    try:
        (listening,) = sock_diag.tcp_sockets(socket.AF_INET, [tcp.getsockname()[1]], [TCP_LISTEN])
        assert sock_diag.unix_backlogs()[_inode(server)] == listening.tx_queue == somaxconn
    finally:
        _close(server, tcp)


def test_agrees_with_ss(tmp_path):
    if shutil.which('ss') is None:
        pytest.skip('ss (iproute2) is not installed')
    path = str(tmp_path / 'ss.sock')
    server, clients = _unix_server(path, 7, 2)
    tcp, tcp_clients = _tcp_server('127.0.0.1', 6, 4)
    try:
        unix_line = next(line for line in _ss('-lxn').splitlines() if f' {path} ' in line)
        recv_q, send_q = unix_line.split()[2:4]
        assert sock_diag.unix_backlogs()[_inode(server)] == int(send_q) == 7 and int(recv_q) == 2
        port = tcp.getsockname()[1]
        tcp_line = _ss('-ltn', f'sport = :{port}').splitlines()[-1]
        recv_q, send_q = tcp_line.split()[1:3]
        (found,) = sock_diag.tcp_sockets(socket.AF_INET, [port], [TCP_LISTEN])
        assert (found.rx_queue, found.tx_queue) == (int(recv_q), int(send_q)) == (4, 6)
    finally:
        _close(server, tcp, *clients, *tcp_clients)


def test_a_deadline_already_past_is_a_timeout():
    with pytest.raises(sock_diag.SockDiagTimeout):
        sock_diag.unix_backlogs(timeout_s=0)
    with pytest.raises(sock_diag.SockDiagTimeout):
        sock_diag.tcp_sockets(socket.AF_INET, [8000], timeout_s=0)


# Sockets on given ports, filtered in the kernel


def _ops(program: bytes) -> list[tuple[int, int, int]]:
    return [struct.unpack_from('=BBH', program, offset) for offset in range(0, len(program), 4)]


def test_the_port_filter_of_one_port():
    assert _ops(sock_diag.local_port_filter([8000])) == [
        (sock_diag.INET_DIAG_BC_S_GE, 8, 20),  # a mismatch jumps past the end: reject
        (0, 0, 8000),
        (sock_diag.INET_DIAG_BC_S_LE, 8, 12),
        (0, 0, 8000),
    ]  # a match of both ends exactly at the end: accept


def test_the_port_filter_of_several_ports_is_an_or():
    assert _ops(sock_diag.local_port_filter([9000, 8000, 8000])) == [
        (sock_diag.INET_DIAG_BC_S_GE, 8, 20),  # a mismatch jumps to the next port's test
        (0, 0, 8000),
        (sock_diag.INET_DIAG_BC_S_LE, 8, 12),
        (0, 0, 8000),
        (sock_diag.INET_DIAG_BC_JMP, 4, 20),  # a match jumps to the end
        (sock_diag.INET_DIAG_BC_S_GE, 8, 20),
        (0, 0, 9000),
        (sock_diag.INET_DIAG_BC_S_LE, 8, 12),
        (0, 0, 9000),
    ]


@pytest.mark.parametrize('ports', [[], [0], [65536], list(range(1, sock_diag.MAX_FILTER_PORTS + 2))])
def test_the_port_filter_refuses_what_it_cannot_encode(ports):
    with pytest.raises(ValueError):
        sock_diag.local_port_filter(ports)


def test_inet_socket_records():
    src, dst = socket.inet_pton(socket.AF_INET, '127.0.0.1'), socket.inet_pton(socket.AF_INET, '127.0.0.2')
    record = struct.pack('=BBBB', socket.AF_INET, 8, 0, 0) + struct.pack('>HH', 8000, 40000)
    record += src + bytes(12) + dst + bytes(12) + struct.pack('=IIIIIIII', 0, 0, 0, 0, 7, 0, 1000, 4242)
    assert sock_diag.parse_inet_diag(record) == TcpRow(
        socket.AF_INET, '127.0.0.1', 8000, TCP_CLOSE_WAIT, 0, 7, 1000, 4242
    )


@pytest.mark.parametrize('ip', ['127.0.0.1', '::1'])
def test_only_sockets_on_the_ports_asked_for(ip):
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    server, clients = _tcp_server(ip, 8, 3)
    other, other_clients = _tcp_server(ip, 8, 1)
    accepted, _ = server.accept()
    try:
        port = server.getsockname()[1]
        found = sock_diag.tcp_sockets(family, [port])
        assert {s.local_port for s in found} == {port}
        listen = [s for s in found if s.state == TCP_LISTEN]
        assert [(s.inode, s.rx_queue, s.tx_queue) for s in listen] == [(_inode(server), 2, 8)]
        connections = sorted((s.inode != 0, s.state) for s in found if s.state != TCP_LISTEN)
        # The accepted connection has a file; the two still queued have none.
        assert connections == [(False, TCP_ESTABLISHED)] * 2 + [(True, TCP_ESTABLISHED)]
        (mine,) = [s for s in found if s.inode == _inode(accepted)]
        assert (mine.local_port, mine.state) == (port, TCP_ESTABLISHED)
        # Several ports in one dump; a port nobody uses gives nothing; the other family is a separate dump.
        both = sock_diag.tcp_sockets(family, [port, other.getsockname()[1], 1])
        assert {s.local_port for s in both} == {port, other.getsockname()[1]}
        assert sock_diag.tcp_sockets(family, [1]) == []
        other_family = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6
        assert sock_diag.tcp_sockets(other_family, [port]) == []
        # Only the states asked for.
        assert {s.state for s in sock_diag.tcp_sockets(family, [port], states=[TCP_LISTEN])} == {10}
    finally:
        _close(server, other, accepted, *clients, *other_clients)


def test_a_client_closing_leaves_the_accepted_connection_in_close_wait():
    server, clients = _tcp_server('127.0.0.1', 8, 1)
    accepted, _ = server.accept()
    try:
        clients[0].close()
        port = server.getsockname()[1]
        mine = wait_for_state(port, _inode(accepted), TCP_CLOSE_WAIT)
        assert mine.inode == _inode(accepted)
    finally:
        _close(server, accepted)


def wait_for_state(port: int, inode: int, state: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sock in sock_diag.tcp_sockets(socket.AF_INET, [port]):
            if sock.inode == inode and sock.state == state:
                return sock
        time.sleep(0.01)
    raise AssertionError(f'socket {inode} never reached state {state}')


def test_a_session_keeps_one_socket_across_dumps_of_every_kind(tmp_path):
    server, clients = _tcp_server('127.0.0.1', 8, 1)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / 'app.sock'))
    unix.listen(4)
    session = sock_diag.Session()
    try:
        port = server.getsockname()[1]
        first = sock_diag.tcp_sockets(socket.AF_INET, [port], session=session)
        held = session._sock
        assert held is not None
        # Answers on a reused socket are the same as on a fresh one, dump after dump.
        for _ in range(3):
            assert sorted(s.inode for s in sock_diag.tcp_sockets(socket.AF_INET, [port], session=session)) == sorted(
                s.inode for s in first
            )
        assert _inode(unix) in sock_diag.unix_backlogs(session=session)
        assert session._sock is held
    finally:
        session.close()
        _close(server, unix, *clients)
    assert session._sock is None


def test_a_session_drops_its_socket_after_a_failed_dump(kernel):
    ours, theirs = kernel
    session = sock_diag.Session()
    session._sock = ours
    theirs.send(nlmsg(RECORD, b'x', length=100))  # a message running past its batch
    with pytest.raises(sock_diag.SockDiagProtocolError):
        session.dump(b'payload', 1.0, sock_diag.DEFAULT_MAX_BYTES)
    # Whatever was still queued for that dump must never be read as the answer to the next one.
    assert session._sock is None
    assert ours.fileno() == -1
    try:
        sock_diag.unix_backlogs(session=session)  # the next dump opens a fresh netlink socket
        assert session._sock is not None
        assert session._sock.family == socket.AF_NETLINK
    finally:
        session.close()
