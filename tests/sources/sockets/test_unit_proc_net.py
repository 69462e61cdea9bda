"""The /proc/net socket tables: parsers on captured tables, readers on a fake root, and on this process's sockets."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources import procfs as procfs_module
from datadog_checks.gunicorn.sources.procfs import ProcessAccessDenied, ProcessGone, ProcFS, ProcTooLarge
from datadog_checks.gunicorn.sources.sockets.listener_stats import listener_stats
from datadog_checks.gunicorn.sources.sockets.proc_net import (
    parse_net_tcp,
    parse_net_unix,
    read_net_tcp,
    read_net_tcp_listening,
    read_net_unix,
)
from datadog_checks.gunicorn.sources.sockets.rows import (
    SO_ACCEPTCON,
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    ListenerStats,
    SocketTableError,
    TcpRow,
    UnixRow,
)

from ...common import wait_for
from .captured import FIXTURE_BYTEORDER, NET, fixture_tcp, fixture_unix

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
SS_UNCONNECTED, SS_CONNECTING = 1, 2  # include/uapi/linux/net.h
PROC = ProcFS('/proc')


# Parsers


def test_parse_net_tcp_decodes_ipv4_rows():
    rows = parse_net_tcp((NET / 'tcp').read_bytes(), byteorder=FIXTURE_BYTEORDER)
    assert len(rows) == 30
    other_listener = next(r for r in rows if r.inode == 38199)
    assert other_listener == TcpRow(AF_INET, '127.0.0.2', 0x818D, TCP_LISTEN, 0, 1, 0, 38199)
    # An accepted connection with an unread 18-byte request: rx_queue counts bytes outside LISTEN.
    accepted = next(r for r in rows if r.inode == 38193)
    assert (accepted.local_port, accepted.state, accepted.rx_queue) == (0x818D, TCP_ESTABLISHED, 18)
    # A queued connection whose client hung up: CLOSE_WAIT, still no file (inode 0).
    assert any(r.state == TCP_CLOSE_WAIT and r.inode == 0 and r.local_port == 0x818D for r in rows)
    # TIME_WAIT-style short rows (FIN_WAIT2 orphans) end after the inode column.
    assert sum(1 for r in rows if r.state == 0x05) == 2


def test_parse_net_tcp_decodes_ipv6_and_v4_mapped_rows():
    rows = parse_net_tcp((NET / 'tcp6').read_bytes(), byteorder=FIXTURE_BYTEORDER)
    assert len(rows) == 10 and all(r.family == AF_INET6 for r in rows)
    by_inode = {r.inode: r for r in rows}
    assert (by_inode[38212].local_ip, by_inode[38212].local_port) == ('::1', 0x8AA7)
    assert by_inode[38218].local_ip == '::ffff:127.0.0.1' and by_inode[38218].rx_queue == 1
    assert by_inode[38220].local_ip == '::ffff:127.0.0.1'


@pytest.mark.parametrize(
    'hex_ip, byteorder, ip',
    [
        (b'0100007F', 'little', '127.0.0.1'),
        (b'7F000001', 'big', '127.0.0.1'),
        (b'00000000000000000000000001000000', 'little', '::1'),
        (b'B80D0120000000000000000001000000', 'little', '2001:db8::1'),
        (b'20010DB8000000000000000000000001', 'big', '2001:db8::1'),
        (b'0000000000000000FFFF00000A00000A', 'little', '::ffff:10.0.0.10'),
    ],
)
def test_addresses_are_words_in_the_producers_byte_order(hex_ip, byteorder, ip):
    line = b'   0: %s:1F40 %s:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1\n' % (hex_ip, hex_ip)
    (row,) = parse_net_tcp(line, byteorder=byteorder)
    assert (row.local_ip, row.local_port, row.uid, row.inode) == (ip, 8000, 1000, 77)


def test_parse_net_tcp_filters_on_local_ports():
    data = (NET / 'tcp').read_bytes()
    rows = parse_net_tcp(data, local_ports={0x818D}, byteorder=FIXTURE_BYTEORDER)
    assert rows and all(r.local_port == 0x818D for r in rows)
    assert rows == [r for r in parse_net_tcp(data, byteorder=FIXTURE_BYTEORDER) if r.local_port == 0x818D]


def test_parse_net_unix_keeps_spaces_abstract_names_and_newlines():
    rows = fixture_unix()
    assert len(rows) == 13
    by_inode = {r.inode: r for r in rows if r.inode}
    assert by_inode[38222] == UnixRow(2, SO_ACCEPTCON, 1, SS_UNCONNECTED, 38222, '/tmp/gunicorn net fixture/app sock')
    assert by_inode[38222].listening
    assert by_inode[38227].path == '@gunicorn fixture' and by_inode[38227].listening
    assert by_inode[38229].path == '/tmp/gunicorn net fixture/new\nline.sock'
    assert by_inode[38231].path == '/tmp/gunicorn net fixture/new\nline.sock' and by_inode[38231].state == 3
    assert by_inode[38232].type == 2 and not by_inode[38232].listening  # SOCK_DGRAM
    assert by_inode[38225].path is None  # a connecting client is unbound
    queued = [r for r in rows if r.inode == 0]
    assert {(r.state, r.path) for r in queued} == {
        (SS_CONNECTING, '/tmp/gunicorn net fixture/app sock'),
        (SS_CONNECTING, '@gunicorn fixture'),
    }


@pytest.mark.parametrize('parse', [parse_net_tcp, parse_net_unix])
@pytest.mark.parametrize('data', [b'', b'\n'])
def test_empty_tables(parse, data):
    assert parse(data) == []


def test_header_only_tables():
    assert parse_net_tcp((NET / 'tcp').read_bytes().split(b'\n', 1)[0]) == []
    assert parse_net_unix(b'Num       RefCount Protocol Flags    Type St Inode Path\n') == []


@pytest.mark.parametrize(
    'parse, data',
    [
        (parse_net_tcp, b'   0: 0100007F:1F40 00000000:0000 0A 00000000\n'),
        (
            parse_net_tcp,
            b'   0: 0100007F1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n',
        ),
        (parse_net_tcp, b'   0: 0100:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n'),
        (parse_net_unix, b'Num RefCount\ngarbage\n'),
    ],
)
def test_unknown_lines_are_parse_errors_naming_the_line(parse, data):
    with pytest.raises(SocketTableError, match='line'):
        parse(data)


# Readers on a fake root


@pytest.fixture
def fake_root(tmp_path) -> ProcFS:
    """A proc root holding process 4242 with the captured tables."""
    net = tmp_path / '4242' / 'net'
    net.mkdir(parents=True)
    for name in ('tcp', 'tcp6', 'unix'):
        shutil.copy(NET / name, net / name)
    return ProcFS(str(tmp_path))


def test_readers_join_the_root(fake_root):
    rows = read_net_tcp(fake_root, 4242)
    assert len(rows) == 40 and {r.family for r in rows} == {AF_INET, AF_INET6}
    assert len(read_net_tcp(ProcFS(str(fake_root.root) + '/'), 4242, local_ports={0x8AA7})) == 4
    assert {r.family for r in read_net_tcp(fake_root, 4242, families={AF_INET6})} == {AF_INET6}
    assert len(read_net_tcp(fake_root, 4242, families=())) == 0
    assert len(read_net_unix(fake_root, 4242)) == 13


def test_missing_tcp6_means_ipv6_is_disabled(fake_root):
    (Path(fake_root.root) / '4242' / 'net' / 'tcp6').unlink()
    assert {r.family for r in read_net_tcp(fake_root, 4242)} == {AF_INET}


def test_a_missing_process_is_gone(fake_root):
    for read in (read_net_tcp, read_net_unix, read_net_tcp_listening):
        with pytest.raises(ProcessGone) as info:
            read(fake_root, 4343)
        assert info.value.pid == 4343 and '4343' in info.value.path


def test_unparsable_or_oversized_tables_name_the_file(fake_root, monkeypatch):
    (Path(fake_root.root) / '4242' / 'net' / 'unix').write_bytes(b'Num\nnonsense\n')
    with pytest.raises(SocketTableError, match='4242/net/unix'):
        read_net_unix(fake_root, 4242)
    monkeypatch.setattr(procfs_module, 'NET_MAX_BYTES', 100)
    with pytest.raises(ProcTooLarge, match='larger than 100 bytes'):
        read_net_tcp(fake_root, 4242)


# Real sockets in this process


def _stats(address: str):
    pid = os.getpid()
    found = listener_stats(read_net_tcp(PROC, pid), read_net_unix(PROC, pid), [parse_bind(address)])
    return found[0] if len(found) == 1 else None


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _connect_nonblocking(family, address) -> socket.socket:
    client = socket.socket(family, socket.SOCK_STREAM)
    client.setblocking(False)
    # A TCP handshake still in progress, or a full unix accept queue (EAGAIN).
    with contextlib.suppress(BlockingIOError, InterruptedError):
        client.connect(address)
    return client


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to drop to another user')
def test_another_users_process_net_tables_are_readable_but_its_fds_are_denied(tmp_path):
    """What an unprivileged Agent sees of an application run by another user (here: root)."""
    path = str(tmp_path / 'app.sock')
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(('127.0.0.1', 0))
        tcp.listen(5)
        unix.bind(path)
        unix.listen(5)
        clients = [socket.create_connection(tcp.getsockname(), timeout=5)]
        addresses = ['{}:{}'.format(*tcp.getsockname()), 'unix:' + path]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(read_end)
            lines = []
            try:
                os.setgid(65534)
                os.setuid(65534)
                tcp, unix = read_net_tcp(PROC, os.getppid()), read_net_unix(PROC, os.getppid())
                for stats in listener_stats(tcp, unix, [parse_bind(a) for a in addresses]):
                    lines.append(f'{stats.address} queued={stats.queued}')
                try:
                    PROC.read_fd_links(os.getppid())
                    lines.append('fd readable')
                except ProcessAccessDenied as exc:
                    lines.append(f'denied {exc.path}')
            except BaseException as exc:
                lines.append(repr(exc))
            os.write(write_end, '\n'.join(lines).encode())
            os._exit(0)
        os.close(write_end)
        try:
            result = os.read(read_end, 4096).decode()
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)
            for client in clients:
                client.close()
    assert result.splitlines() == [
        f'{addresses[0]} queued=1',
        f'{addresses[1]} queued=0',
        f'denied /proc/{os.getpid()}/fd',
    ]


def test_tcp_queue_of_a_listener_that_never_accepts():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(5)
        clients = [socket.create_connection(server.getsockname(), timeout=5) for _ in range(3)]
        try:
            address = '{}:{}'.format(*server.getsockname())
            stats = _stats(address)
            assert stats is not None and stats.listen_inodes == (_inode(server),)
            assert (stats.queued, stats.in_flight, stats.max_backlog) == (3, 0, None)
            conn, _ = server.accept()
            with conn:
                stats = _stats(address)
                assert (stats.queued, stats.in_flight) == (2, 1)
        finally:
            for client in clients:
                client.close()


def test_tcp_queue_caps_at_backlog_plus_one():
    # The kernel refuses a handshake only when the queue is already *over* the backlog (sk_acceptq_is_full uses >),
    # so backlog 5 holds 6 connections; later clients stay in SYN_SENT and retry.
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(5)
        clients = [_connect_nonblocking(AF_INET, server.getsockname()) for _ in range(9)]
        try:
            address = '{}:{}'.format(*server.getsockname())
            stats = wait_for(lambda: (s := _stats(address)) and s.queued == 6 and s, 5, 'queue of 6')
            assert stats.queued == 6
        finally:
            for client in clients:
                client.close()


def test_unix_queue_of_a_listener_that_never_accepts(tmp_path):
    path = str(tmp_path / 'app with spaces.sock')
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(5)
        clients = []
        try:
            for _ in range(3):
                client = socket.socket(socket.AF_UNIX)
                clients.append(client)
                client.connect(path)
            stats = _stats('unix:' + path)
            assert stats == ListenerStats('unix:' + path, 'unix', (_inode(server),), 3, 0, None)
            conn, _ = server.accept()
            with conn:
                stats = _stats('unix:' + path)
                assert (stats.queued, stats.in_flight) == (2, 1)
            # Full queue: unix_stream_connect also waits only once the queue is over the backlog, so 6 fit.
            clients += [_connect_nonblocking(socket.AF_UNIX, path) for _ in range(6)]
            assert _stats('unix:' + path).queued == 6
        finally:
            for client in clients:
                client.close()


def test_real_tables_decode_in_the_host_byte_order():
    with socket.socket() as v4, socket.socket(AF_INET6) as v6:
        v4.bind(('127.0.0.1', 0))
        v4.listen()
        v6.bind(('::1', 0))
        v6.listen()
        rows = {r.inode: r for r in read_net_tcp(PROC, os.getpid())}
        assert (rows[_inode(v4)].local_ip, rows[_inode(v4)].local_port) == v4.getsockname()
        assert (rows[_inode(v6)].local_ip, rows[_inode(v6)].local_port) == v6.getsockname()[:2]


@pytest.mark.skipif(sys.byteorder != FIXTURE_BYTEORDER, reason='the fixtures hold little-endian addresses')
def test_listening_rows_only(fake_root):
    want = [r for r in fixture_tcp() if r.state == TCP_LISTEN]
    assert read_net_tcp_listening(fake_root, 4242) == want
    assert {r.family for r in read_net_tcp_listening(fake_root, 4242, families={AF_INET6})} == {AF_INET6}
    (Path(fake_root.root) / '4242' / 'net' / 'tcp6').unlink()  # IPv6 disabled
    assert read_net_tcp_listening(fake_root, 4242) == [r for r in want if r.family == AF_INET]
    with pytest.raises(ProcessGone):
        read_net_tcp_listening(fake_root, 4343)


def test_listening_rows_stop_before_the_established_table(fake_root):
    # Anything after the first non-LISTEN row is never parsed (the kernel never produces it either).
    tcp = Path(fake_root.root) / '4242' / 'net' / 'tcp'
    lines = tcp.read_bytes().split(b'\n')
    first_other = next(i for i, line in enumerate(lines[1:], 1) if line.split()[3] != b'0A')
    tcp.write_bytes(b'\n'.join([*lines[: first_other + 1], b'garbage that would not parse', b'']))
    rows = read_net_tcp_listening(fake_root, 4242, families={AF_INET})
    assert len(rows) == first_other - 1 and all(r.state == TCP_LISTEN for r in rows)


def test_listening_rows_of_this_process_with_connections_open():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(5)
        clients = [socket.create_connection(server.getsockname(), timeout=5) for _ in range(3)]
        try:
            rows = read_net_tcp_listening(PROC, os.getpid(), families={AF_INET})
            assert all(r.state == TCP_LISTEN for r in rows)
            (ours,) = [r for r in rows if r.inode == _inode(server)]
            assert (ours.local_port, ours.rx_queue) == (server.getsockname()[1], 3)
        finally:
            for client in clients:
                client.close()
