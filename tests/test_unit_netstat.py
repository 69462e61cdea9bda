"""netstat: parsers on captured /proc/net tables, listener matching, readers on fake roots and on real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from datadog_checks.gunicorn import netstat

from .gunicorn_env import wait_for

NET = Path(__file__).parent / 'fixtures' / 'net'
MANIFEST = json.loads((NET / 'manifest.json').read_text())
# The fixtures were captured on x86-64: their hex addresses are little-endian words.
FIXTURE_BYTEORDER = 'little'
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
TcpRow, UnixRow = netstat.TcpRow, netstat.UnixRow


def fixture_tcp() -> list:
    return [r for name in ('tcp', 'tcp6') for r in netstat.parse_net_tcp((NET / name).read_bytes(), byteorder='little')]


def fixture_unix() -> list:
    return netstat.parse_net_unix((NET / 'unix').read_bytes())


# Parsers


def test_parse_net_tcp_decodes_ipv4_rows():
    rows = netstat.parse_net_tcp((NET / 'tcp').read_bytes(), byteorder=FIXTURE_BYTEORDER)
    assert len(rows) == 30
    other_listener = next(r for r in rows if r.inode == 38199)
    assert other_listener == TcpRow(AF_INET, '127.0.0.2', 0x818D, '0.0.0.0', 0, netstat.TCP_LISTEN, 0, 1, 0, 38199)
    # An accepted connection with an unread 18-byte request: rx_queue counts bytes outside LISTEN.
    accepted = next(r for r in rows if r.inode == 38193)
    assert (accepted.remote_ip, accepted.remote_port, accepted.state, accepted.rx_queue) == (
        '127.0.0.1',
        0x8AB2,
        netstat.TCP_ESTABLISHED,
        18,
    )
    # A queued connection whose client hung up: CLOSE_WAIT, still no file (inode 0).
    assert any(r.state == netstat.TCP_CLOSE_WAIT and r.inode == 0 and r.local_port == 0x818D for r in rows)
    # TIME_WAIT-style short rows (FIN_WAIT2 orphans) end after the inode column.
    assert sum(1 for r in rows if r.state == 0x05) == 2


def test_parse_net_tcp_decodes_ipv6_and_v4_mapped_rows():
    rows = netstat.parse_net_tcp((NET / 'tcp6').read_bytes(), byteorder=FIXTURE_BYTEORDER)
    assert len(rows) == 10 and all(r.family == AF_INET6 for r in rows)
    by_inode = {r.inode: r for r in rows}
    assert (by_inode[38212].local_ip, by_inode[38212].local_port, by_inode[38212].remote_ip) == ('::1', 0x8AA7, '::')
    assert by_inode[38218].local_ip == '::ffff:127.0.0.1' and by_inode[38218].rx_queue == 1
    assert by_inode[38220].remote_ip == '::ffff:127.0.0.1' and by_inode[38220].remote_port == 0x902E


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
    (row,) = netstat.parse_net_tcp(line, byteorder=byteorder)
    assert (row.local_ip, row.local_port, row.uid, row.inode) == (ip, 8000, 1000, 77)


def test_parse_net_tcp_filters_on_local_ports():
    data = (NET / 'tcp').read_bytes()
    rows = netstat.parse_net_tcp(data, local_ports={0x818D}, byteorder=FIXTURE_BYTEORDER)
    assert rows and all(r.local_port == 0x818D for r in rows)
    assert rows == [r for r in netstat.parse_net_tcp(data, byteorder=FIXTURE_BYTEORDER) if r.local_port == 0x818D]


def test_parse_net_unix_keeps_spaces_abstract_names_and_newlines():
    rows = fixture_unix()
    assert len(rows) == 13
    by_inode = {r.inode: r for r in rows if r.inode}
    assert by_inode[38222] == UnixRow(
        2, netstat.SO_ACCEPTCON, 1, netstat.SS_UNCONNECTED, 38222, '/tmp/gunicorn net fixture/app sock'
    )
    assert by_inode[38222].listening
    assert by_inode[38227].path == '@gunicorn fixture' and by_inode[38227].listening
    assert by_inode[38229].path == '/tmp/gunicorn net fixture/new\nline.sock'
    assert by_inode[38231].path == '/tmp/gunicorn net fixture/new\nline.sock' and by_inode[38231].state == 3
    assert by_inode[38232].type == 2 and not by_inode[38232].listening  # SOCK_DGRAM
    assert by_inode[38225].path is None  # a connecting client is unbound
    queued = [r for r in rows if r.inode == 0]
    assert {(r.state, r.path) for r in queued} == {
        (netstat.SS_CONNECTING, '/tmp/gunicorn net fixture/app sock'),
        (netstat.SS_CONNECTING, '@gunicorn fixture'),
    }


@pytest.mark.parametrize('parse', [netstat.parse_net_tcp, netstat.parse_net_unix])
@pytest.mark.parametrize('data', [b'', b'\n'])
def test_empty_tables(parse, data):
    assert parse(data) == []


def test_header_only_tables():
    assert netstat.parse_net_tcp((NET / 'tcp').read_bytes().split(b'\n', 1)[0]) == []
    assert netstat.parse_net_unix(b'Num       RefCount Protocol Flags    Type St Inode Path\n') == []


@pytest.mark.parametrize(
    'parse, data',
    [
        (netstat.parse_net_tcp, b'   0: 0100007F:1F40 00000000:0000 0A 00000000\n'),
        (
            netstat.parse_net_tcp,
            b'   0: 0100007F1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n',
        ),
        (netstat.parse_net_tcp, b'   0: 0100:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n'),
        (netstat.parse_net_unix, b'Num RefCount\ngarbage\n'),
    ],
)
def test_unknown_lines_are_parse_errors_naming_the_line(parse, data):
    with pytest.raises(netstat.NetParseError, match='line'):
        parse(data)


@pytest.mark.parametrize(
    'text, family, ip, port, path, canonical',
    [
        ('127.0.0.1:8000', AF_INET, '127.0.0.1', 8000, '', '127.0.0.1:8000'),
        ('0.0.0.0:80', AF_INET, '0.0.0.0', 80, '', '0.0.0.0:80'),
        ('tcp://127.0.0.1:8000', AF_INET, '127.0.0.1', 8000, '', '127.0.0.1:8000'),
        ('http://127.0.0.1:18001', AF_INET, '127.0.0.1', 18001, '', '127.0.0.1:18001'),
        ('[::]:8000', AF_INET6, '::', 8000, '', '[::]:8000'),
        ('https://[0:0::1]:443', AF_INET6, '::1', 443, '', '[::1]:443'),
        ('unix:/run/app.sock', socket.AF_UNIX, '', 0, '/run/app.sock', 'unix:/run/app.sock'),
        ('unix:///run/my app.sock', socket.AF_UNIX, '', 0, '/run/my app.sock', 'unix:/run/my app.sock'),
        ('unix://relative.sock', socket.AF_UNIX, '', 0, 'relative.sock', 'unix:relative.sock'),
        ('unix:@abstract', socket.AF_UNIX, '', 0, '@abstract', 'unix:@abstract'),
    ],
)
def test_parse_bind(text, family, ip, port, path, canonical):
    bind = netstat.parse_bind(text)
    assert (bind.family, bind.ip, bind.port, bind.path, str(bind)) == (family, ip, port, path, canonical)


@pytest.mark.parametrize(
    'text', ['localhost:8000', '127.0.0.1', ':8000', '127.0.0.1:0', '127.0.0.1:70000', 'fd://3', 'unix:', '[::1]']
)
def test_parse_bind_refuses_what_it_would_have_to_guess(text):
    with pytest.raises(ValueError):
        netstat.parse_bind(text)


# Matching rows to listeners


@pytest.mark.parametrize('scenario', sorted(MANIFEST))
@pytest.mark.parametrize('identify_by', ['inodes', 'addresses'])
def test_listener_stats_on_captured_tables(scenario, identify_by):
    want = MANIFEST[scenario]
    ident = {'inodes': set(want['listen_inodes'])} if identify_by == 'inodes' else {'addresses': [want['address']]}
    (stats,) = netstat.listener_stats(fixture_tcp(), fixture_unix(), **ident)
    kind = 'unix' if scenario.startswith('unix') else 'tcp6' if scenario.startswith('tcp6') else 'tcp'
    assert stats == netstat.ListenerStats(
        want['address'], kind, tuple(want['listen_inodes']), want['queued'], want['in_flight'], None
    )


def test_inode_sets_may_hold_every_socket_of_the_application():
    # socket_inodes() of master and workers returns listeners, accepted connections and pipes alike.
    every = {38191, 38193, 38195, 38222, 38224, 12345}
    stats = netstat.listener_stats(fixture_tcp(), fixture_unix(), inodes=every)
    assert [(s.address, s.queued, s.in_flight) for s in stats] == [
        (MANIFEST['tcp_app']['address'], 3, 2),
        (MANIFEST['unix_app']['address'], 2, 1),
    ]


def test_another_programs_listener_on_the_same_port_is_never_counted():
    addresses = [MANIFEST['tcp_app']['address'], MANIFEST['unix_app']['address']]
    stats = netstat.listener_stats(fixture_tcp(), fixture_unix(), addresses=addresses)
    assert [s.address for s in stats] == addresses
    assert MANIFEST['tcp_other']['listen_inodes'][0] not in {i for s in stats for i in s.listen_inodes}


@pytest.mark.parametrize('ident', [{}, {'inodes': None, 'addresses': None}, {'inodes': set(), 'addresses': []}])
def test_no_identification_returns_nothing(ident):
    assert netstat.listener_stats(fixture_tcp(), fixture_unix(), **ident) == []


def test_identified_listener_without_rows_is_left_out():
    assert netstat.listener_stats(fixture_tcp(), fixture_unix(), addresses=['127.0.0.1:1', 'unix:/nope']) == []


def test_max_backlog_is_summed_over_reuse_port_sockets_and_unknown_when_one_is_missing():
    want = MANIFEST['tcp_reuse_port']
    first, second = want['listen_inodes']
    (stats,) = netstat.listener_stats(fixture_tcp(), addresses=[want['address']], max_backlogs={first: 4, second: 4})
    assert (stats.queued, stats.max_backlog) == (5, 8)
    (stats,) = netstat.listener_stats(fixture_tcp(), addresses=[want['address']], max_backlogs={first: 4})
    assert stats.max_backlog is None


def _row(family, local, port, state, inode, rx=0, remote='192.0.2.9'):
    remote = remote if family == AF_INET else '2001:db8::9'
    return TcpRow(family, local, port, remote, 40000 + inode, state, 0, rx, 0, inode)


def test_wildcard_listeners_take_connections_of_their_own_table_only():
    listen, estab = netstat.TCP_LISTEN, netstat.TCP_ESTABLISHED
    rows = [
        _row(AF_INET, '0.0.0.0', 8000, listen, 1, rx=2),
        _row(AF_INET, '127.0.0.1', 8000, estab, 11),
        _row(AF_INET, '10.0.0.5', 8000, estab, 12),
        _row(AF_INET, '10.0.0.5', 8000, estab, 0),  # queued
        _row(AF_INET, '10.0.0.5', 8001, estab, 13),  # another port
        # A v6-only '[::]:8000' of another program: its rows, v4-mapped or not, are in tcp6.
        _row(AF_INET6, '::', 8000, listen, 2, rx=1),
        _row(AF_INET6, '::ffff:10.0.0.5', 8000, estab, 21),
        _row(AF_INET6, '2001:db8::5', 8000, estab, 22),
    ]
    (v4,) = netstat.listener_stats(rows, addresses=['0.0.0.0:8000'])
    assert (v4.address, v4.kind, v4.listen_inodes, v4.queued, v4.in_flight) == ('0.0.0.0:8000', 'tcp', (1,), 2, 2)
    (v6,) = netstat.listener_stats(rows, inodes={2})
    assert (v6.address, v6.kind, v6.queued, v6.in_flight) == ('[::]:8000', 'tcp6', 1, 2)
    # A specific address is not the wildcard listener on its port.
    assert netstat.listener_stats(rows, addresses=['10.0.0.5:8000']) == []


# Readers on a fake root


@pytest.fixture
def fake_root(tmp_path):
    net = tmp_path / '4242' / 'net'
    net.mkdir(parents=True)
    for name in ('tcp', 'tcp6', 'unix'):
        shutil.copy(NET / name, net / name)
    return tmp_path


def test_readers_join_the_root(fake_root):
    rows = netstat.read_net_tcp(str(fake_root), 4242)
    assert len(rows) == 40 and {r.family for r in rows} == {AF_INET, AF_INET6}
    assert len(netstat.read_net_tcp(str(fake_root) + '/', 4242, local_ports={0x8AA7})) == 4
    assert {r.family for r in netstat.read_net_tcp(str(fake_root), 4242, families={AF_INET6})} == {AF_INET6}
    assert len(netstat.read_net_tcp(str(fake_root), 4242, families=())) == 0
    assert len(netstat.read_net_unix(str(fake_root), 4242)) == 13


@pytest.mark.skipif(sys.byteorder != FIXTURE_BYTEORDER, reason='the fixtures hold little-endian addresses')
@pytest.mark.parametrize('scenario', sorted(MANIFEST))
def test_read_listener_stats_equals_matching_every_row(fake_root, scenario):
    want = MANIFEST[scenario]
    for ident in ({'inodes': want['listen_inodes']}, {'addresses': [want['address']]}):
        expected = netstat.listener_stats(fixture_tcp(), fixture_unix(), max_backlogs={1: 1}, **ident)
        assert netstat.read_listener_stats(str(fake_root), 4242, max_backlogs={1: 1}, **ident) == expected
    assert netstat.read_listener_stats(str(fake_root), 4242) == []


def test_read_listener_stats_reads_only_the_tables_it_needs(fake_root):
    net = fake_root / '4242' / 'net'
    tcp_app, unix_app = MANIFEST['tcp_app']['address'], MANIFEST['unix_app']['address']
    (net / 'unix').rename(net / 'unix.away')
    (net / 'tcp6').write_bytes(b'not a table')
    assert [s.address for s in netstat.read_listener_stats(str(fake_root), 4242, addresses=[tcp_app])] == [tcp_app]
    (net / 'unix.away').rename(net / 'unix')
    (net / 'tcp').unlink()
    (stats,) = netstat.read_listener_stats(str(fake_root), 4242, addresses=[unix_app])
    assert stats.address == unix_app
    # Identified by inode, every table is needed.
    with pytest.raises(netstat.NetProcessGone):
        netstat.read_listener_stats(str(fake_root), 4242, inodes=MANIFEST['unix_app']['listen_inodes'])


def test_missing_tcp6_means_ipv6_is_disabled(fake_root):
    (fake_root / '4242' / 'net' / 'tcp6').unlink()
    assert {r.family for r in netstat.read_net_tcp(str(fake_root), 4242)} == {AF_INET}


def test_a_missing_process_is_gone(fake_root):
    for read in (netstat.read_net_tcp, netstat.read_net_unix, netstat.socket_inodes):
        with pytest.raises(netstat.NetProcessGone) as info:
            read(str(fake_root), 4343)
        assert info.value.pid == 4343 and '4343' in info.value.path


def test_unparsable_or_oversized_tables_name_the_file(fake_root):
    (fake_root / '4242' / 'net' / 'unix').write_bytes(b'Num\nnonsense\n')
    with pytest.raises(netstat.NetTableError, match='4242/net/unix'):
        netstat.read_net_unix(str(fake_root), 4242)
    with pytest.raises(netstat.NetTableError, match='larger than 100 bytes'):
        netstat.read_net_tcp(str(fake_root), 4242, max_bytes=100)


# Real sockets in this process


def _stats(**ident):
    pid = os.getpid()
    found = netstat.listener_stats(netstat.read_net_tcp('/proc', pid), netstat.read_net_unix('/proc', pid), **ident)
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


def test_socket_inodes_of_this_process():
    with socket.socket() as sock:
        assert _inode(sock) in netstat.socket_inodes('/proc', os.getpid())


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
                for stats in netstat.read_listener_stats('/proc', os.getppid(), addresses=addresses):
                    lines.append(f'{stats.address} queued={stats.queued}')
                try:
                    netstat.socket_inodes('/proc', os.getppid())
                    lines.append('fd readable')
                except netstat.NetAccessDenied as exc:
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
            for ident in (
                {'inodes': netstat.socket_inodes('/proc', os.getpid())},
                {'addresses': ['{}:{}'.format(*server.getsockname())]},
            ):
                stats = _stats(**ident)
                assert stats is not None and stats.listen_inodes == (_inode(server),)
                assert (stats.queued, stats.in_flight, stats.max_backlog) == (3, 0, None)
            conn, _ = server.accept()
            with conn:
                stats = _stats(inodes={_inode(server)})
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
            stats = wait_for(lambda: (s := _stats(inodes={_inode(server)})) and s.queued == 6 and s, 5, 'queue of 6')
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
            for ident in ({'inodes': {_inode(server)}}, {'addresses': ['unix:' + path]}):
                stats = _stats(**ident)
                assert stats == netstat.ListenerStats('unix:' + path, 'unix', (_inode(server),), 3, 0, None)
            conn, _ = server.accept()
            with conn:
                stats = _stats(inodes={_inode(server)})
                assert (stats.queued, stats.in_flight) == (2, 1)
            # Full queue: unix_stream_connect also waits only once the queue is over the backlog, so 6 fit.
            clients += [_connect_nonblocking(socket.AF_UNIX, path) for _ in range(6)]
            assert _stats(inodes={_inode(server)}).queued == 6
        finally:
            for client in clients:
                client.close()


def test_real_tables_decode_in_the_host_byte_order():
    with socket.socket() as v4, socket.socket(AF_INET6) as v6:
        v4.bind(('127.0.0.1', 0))
        v4.listen()
        v6.bind(('::1', 0))
        v6.listen()
        rows = {r.inode: r for r in netstat.read_net_tcp('/proc', os.getpid())}
        assert (rows[_inode(v4)].local_ip, rows[_inode(v4)].local_port) == v4.getsockname()
        assert (rows[_inode(v6)].local_ip, rows[_inode(v6)].local_port) == v6.getsockname()[:2]


# Accepted inodes and LISTEN-only reads


def test_accepted_inodes_are_the_connections_counted_in_flight():
    stats = netstat.listener_stats(fixture_tcp(), fixture_unix(), addresses=[MANIFEST['tcp_app']['address']])
    (tcp_app,) = stats
    assert len(tcp_app.accepted_inodes) == tcp_app.in_flight == 2
    assert all(inode for inode in tcp_app.accepted_inodes)
    (unix_app,) = netstat.listener_stats(unix=fixture_unix(), addresses=[MANIFEST['unix_app']['address']])
    assert len(unix_app.accepted_inodes) == unix_app.in_flight == 1


def test_a_row_seen_twice_is_one_connection():
    # A table read in several passes may repeat a row when sockets move between the passes.
    rows = fixture_tcp()
    (once,) = netstat.listener_stats(rows, addresses=[MANIFEST['tcp_app']['address']])
    (twice,) = netstat.listener_stats(rows + rows[4:], addresses=[MANIFEST['tcp_app']['address']])
    assert twice.in_flight == once.in_flight


@pytest.mark.skipif(sys.byteorder != FIXTURE_BYTEORDER, reason='the fixtures hold little-endian addresses')
def test_listening_rows_only(fake_root):
    want = [r for r in fixture_tcp() if r.state == netstat.TCP_LISTEN]
    assert netstat.read_net_tcp_listening(str(fake_root), 4242) == want
    assert {r.family for r in netstat.read_net_tcp_listening(str(fake_root), 4242, families={AF_INET6})} == {AF_INET6}
    (fake_root / '4242' / 'net' / 'tcp6').unlink()  # IPv6 disabled
    assert netstat.read_net_tcp_listening(str(fake_root), 4242) == [r for r in want if r.family == AF_INET]
    with pytest.raises(netstat.NetProcessGone):
        netstat.read_net_tcp_listening(str(fake_root), 4343)


def test_listening_rows_stop_before_the_established_table(fake_root):
    # Anything after the first non-LISTEN row is never parsed (the kernel never produces it either).
    tcp = fake_root / '4242' / 'net' / 'tcp'
    lines = tcp.read_bytes().split(b'\n')
    first_other = next(i for i, line in enumerate(lines[1:], 1) if line.split()[3] != b'0A')
    tcp.write_bytes(b'\n'.join([*lines[: first_other + 1], b'garbage that would not parse', b'']))
    rows = netstat.read_net_tcp_listening(str(fake_root), 4242, families={AF_INET})
    assert len(rows) == first_other - 1 and all(r.state == netstat.TCP_LISTEN for r in rows)


def test_listening_rows_of_this_process_with_connections_open():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(5)
        clients = [socket.create_connection(server.getsockname(), timeout=5) for _ in range(3)]
        try:
            rows = netstat.read_net_tcp_listening('/proc', os.getpid(), families={AF_INET})
            assert all(r.state == netstat.TCP_LISTEN for r in rows)
            (ours,) = [r for r in rows if r.inode == _inode(server)]
            assert (ours.local_port, ours.rx_queue) == (server.getsockname()[1], 3)
        finally:
            for client in clients:
                client.close()
