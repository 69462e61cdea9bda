"""The control-socket client against fault servers: real Unix sockets served by a thread the test controls.

Every fault asserts the error type, that the message names the socket path and says what to do, and that the call
returned well within a bound far from its deadline (not a tight timing assertion)."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
import threading
from typing import TypeVar

import pytest

from datadog_checks.gunicorn.sources.control_socket import client as cs
from datadog_checks.gunicorn.sources.control_socket.client import (
    CommandFailed,
    ControlSocketClient,
    ControlSocketError,
    ProtocolError,
    SocketMissing,
    SocketPermissionDenied,
    SocketTimeout,
)

from ...common import wait_for
from .fakes import (
    MARGIN,
    STATS,
    TIMEOUT,
    FaultServer,
    answer,
    fails,
    ok,
    query_as_nobody,
    refuses_listeners,
    send_json,
    send_raw,
    show,
    str_fails,
    timed,
)

E = TypeVar('E', bound=ControlSocketError)


# Framing


def test_frame_layout():
    frame = cs.encode_frame({'id': 1, 'command': 'show stats', 'args': []})
    assert frame[:4] == struct.pack('>I', len(frame) - 4)
    assert json.loads(frame[4:]) == {'id': 1, 'command': 'show stats', 'args': []}
    with pytest.raises(ValueError, match='cap'):
        cs.encode_frame({'x': 'y' * 100}, max_frame_bytes=50)


# The allow-list


@pytest.mark.parametrize(
    'command',
    ['reload', 'shutdown', 'worker add', 'worker kill 1', 'dirty remove', 'show stats; reload', 'SHOW STATS', 'help'],
)
def test_only_read_only_commands_are_sent(serve, command):
    server = serve(answer())
    client = ControlSocketClient(server.path, TIMEOUT)
    with pytest.raises(ValueError, match='refusing'):
        client.query(command)
    # Refused before touching the socket: nothing connected, nothing sent.
    assert client.connects == 0
    assert server.accepted == 0 and server.requests == []


def test_refusal_comes_before_any_socket_error(sock_dir):
    with pytest.raises(ValueError):
        ControlSocketClient(os.path.join(sock_dir, 'absent.ctl'), TIMEOUT).query('reload')


# The exchange


def test_one_connection_for_every_command_with_increasing_ids(serve):
    server = serve(answer(lambda request: {'command': request['command']}))
    with ControlSocketClient(server.path, TIMEOUT) as client:
        for command in sorted(cs.ALLOWED_COMMANDS):
            assert client.query(command) == {'command': command}
    assert server.accepted == 1 and client.connects == 1
    assert [r['id'] for r in server.requests] == [1, 2, 3, 4, 5]
    assert all(r['args'] == [] for r in server.requests)


def test_hang_without_reply_times_out(serve):
    server = serve(lambda conn, srv: (srv.read(conn), srv.release.wait(10)))
    client = ControlSocketClient(server.path, TIMEOUT)
    error = fails(
        SocketTimeout, server.path, lambda: show(client, 'stats'), 'raise the timeout', 'waiting for the reply'
    )
    assert isinstance(error.__cause__, TimeoutError)
    # A silent connection is given up after half the remaining time and the question asked again (Gunicorn can leak
    # a connection into a fork), but the whole exchange still ends at the one deadline.
    assert server.accepted >= 2


def test_one_deadline_for_the_whole_exchange(serve):
    # Every answer takes 0.1 s, far inside the 0.6 s timeout, so each call alone succeeds; in a row they share one
    # deadline and the sequence ends with a timeout soon after 0.6 s.
    def slow(conn, srv):
        while (request := srv.read(conn)) is not None:
            if srv.release.wait(0.1):
                return
            send_json(conn, ok(request, STATS))

    server = serve(slow)
    client = ControlSocketClient(server.path, 0.6)
    answered = []

    def keep_asking():
        while True:
            answered.append(show(client, 'stats'))

    fails(SocketTimeout, server.path, keep_asking)
    assert 2 <= len(answered) < 6


def test_a_silent_connection_is_replaced(serve):
    # What a control connection leaked into a forked worker looks like: accepted, never answered, never closed.
    def silent_first(conn, srv):
        request = srv.read(conn)
        if srv.accepted == 1:
            srv.release.wait(10)
        else:
            send_json(conn, ok(request, STATS))

    server = serve(silent_first)
    with ControlSocketClient(server.path, 1.0) as client, timed() as elapsed:
        assert show(client, 'stats').pid == 1000
    assert client.connects == 2 and 0.4 < elapsed[0] < MARGIN


def test_a_slow_drip_cannot_extend_the_deadline(serve):
    # A byte every 50 ms never trips a per-recv timeout; only the shared deadline stops it.
    def drip(conn, srv):
        request = srv.read(conn)
        frame = cs.encode_frame(ok(request, STATS))
        for byte in frame:
            conn.sendall(bytes([byte]))
            if srv.release.wait(0.05):
                return

    server = serve(drip)
    fails(SocketTimeout, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats'))


def test_server_closing_before_the_reply(serve):
    server = serve(lambda conn, srv: srv.read(conn))
    message = str_fails(
        ProtocolError, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats'), 'another program'
    )
    # Read-only commands are asked again on a fresh connection, within the deadline and with a pause in between.
    assert 'closed the connection' in message
    assert 2 <= server.accepted <= 1 + TIMEOUT / cs._RECONNECT_INTERVAL_SECONDS


def test_server_closing_mid_frame(serve):
    def half(conn, srv):
        srv.read(conn)
        conn.sendall(struct.pack('>I', 100) + b'{"id": 1, ')

    server = serve(half)
    message = str_fails(
        ProtocolError, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats'), 'another program'
    )
    assert 'mid-frame' in message
    assert server.accepted == 1


def test_server_closing_inside_the_length_prefix(serve):
    def half(conn, srv):
        srv.read(conn)
        conn.sendall(b'\x00\x00')

    server = serve(half)
    assert 'mid-frame' in str_fails(
        ProtocolError, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats')
    )


@pytest.mark.parametrize(
    'payload, fragment',
    [
        (b'{"id": 1, "status": "ok", "data": ', 'not UTF-8 JSON'),
        (b'\xff' * 8, 'not UTF-8 JSON'),
        (b'[1, 2]', 'not a JSON object'),
        (b'{"id": 1, "status": "maybe"}', "status 'maybe'"),
        (b'{"id": true, "status": "ok", "data": {}}', 'with id True'),
        # Python's decoder recurses once per level: a reply nested this deep would exhaust the stack.
        (b'[' * 100_000 + b']' * 100_000, 'nested deeper'),
        (b'{"id": 1, "status": "ok", "data": ' + b'{"a": ' * 50_000 + b'1' + b'}' * 50_001, 'nested deeper'),
    ],
    ids=['garbage-json', 'not-utf8', 'not-an-object', 'unknown-status', 'bool-id', 'deep-list', 'deep-data'],
)
def test_malformed_replies(serve, payload, fragment):
    def bad(conn, srv):
        srv.read(conn)
        send_raw(conn, payload)
        srv.release.wait(10)

    server = serve(bad)
    assert fragment in str_fails(
        ProtocolError, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats')
    )


def test_huge_length_prefix_is_refused_before_reading(serve):
    # The body never comes: if the client tried to read it, this would be a timeout, not a protocol error.
    def huge(conn, srv):
        srv.read(conn)
        conn.sendall(struct.pack('>I', 2**31))
        srv.release.wait(10)

    server = serve(huge)
    with timed() as elapsed:
        message = str_fails(
            ProtocolError, server.path, lambda: show(ControlSocketClient(server.path, 30.0), 'stats'), 'max_frame_bytes'
        )
    assert elapsed[0] < MARGIN  # refused at once: reading the body would have waited until the server lets go (10 s)
    assert str(2**31) in message


def test_wrong_reply_id(serve):
    def wrong(conn, srv):
        request = srv.read(conn)
        send_json(conn, {'id': request['id'] + 1, 'status': 'ok', 'data': STATS})
        srv.release.wait(10)

    server = serve(wrong)
    assert 'with id 2' in str_fails(
        ProtocolError, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats')
    )


def test_error_reply_keeps_the_connection(serve):
    server = serve(refuses_listeners)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        message = str_fails(CommandFailed, server.path, lambda: show(client, 'listeners'), 'older than the command')
        assert 'Unknown show target' in message
        assert show(client, 'stats').pid == 1000
    assert server.accepted == 1


def test_a_dropped_connection_is_reopened(serve):
    # What a Gunicorn master does around every fork: it closes its control server and every open connection.
    def one_answer_per_connection(conn, srv):
        request = srv.read(conn)
        send_json(conn, ok(request, STATS))

    server = serve(one_answer_per_connection)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        show(client, 'stats')
        show(client, 'stats')
    assert client.connects == 2
    # Id 2 went to the closed connection; the retry gets a new id, so a late reply can never be mistaken for it.
    assert [r['id'] for r in server.requests] == [1, 3]


def test_several_drops_in_a_row_are_survived(serve):
    # A reload forks once per worker, each fork dropping the connections of the moment.
    def drop_three_then_answer(conn, srv):
        request = srv.read(conn)
        if srv.accepted > 3:
            send_json(conn, ok(request, STATS))

    server = serve(drop_three_then_answer)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert show(client, 'stats').pid == 1000
    assert client.connects == 4 and [r['id'] for r in server.requests] == [1, 2, 3, 4]


def test_reconnect_waits_for_the_socket_to_come_back(sock_dir):
    # Between closing and re-creating its socket the master leaves no file; the reconnect looks again until the
    # deadline instead of reporting a missing socket.
    path = os.path.join(sock_dir, 'gunicorn.ctl')

    def answer_once_then_vanish(conn, srv):
        request = srv.read(conn)
        send_json(conn, ok(request, STATS))

    first = FaultServer(path, answer_once_then_vanish)
    second = None
    try:
        client = ControlSocketClient(path, 1.5)
        show(client, 'stats')
        first.stop()
        os.unlink(path)

        def restart():
            nonlocal second
            second = FaultServer(path, answer())

        timer = threading.Timer(0.1, restart)
        timer.start()
        assert show(client, 'stats').pid == 1000
        timer.join()
        assert client.connects == 2
        client.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_missing_socket(sock_dir):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    error = fails(
        SocketMissing,
        path,
        lambda: show(ControlSocketClient(path, TIMEOUT), 'stats'),
        'before 25.1',
        '--control-socket',
    )
    assert isinstance(error.__cause__, FileNotFoundError)


def test_missing_directory(sock_dir):
    path = os.path.join(sock_dir, 'no-such-dir', 'gunicorn.ctl')
    fails(SocketMissing, path, lambda: show(ControlSocketClient(path, TIMEOUT), 'stats'), 'nothing is bound')


def test_stale_socket_file(sock_dir):
    # A socket file whose listener is gone (the process exited without unlinking it): ECONNREFUSED.
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    fails(SocketMissing, path, lambda: show(ControlSocketClient(path, TIMEOUT), 'stats'), 'nothing listens', 'exited')


def test_regular_file_at_the_path(sock_dir):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with open(path, 'w'):
        pass
    fails(SocketMissing, path, lambda: show(ControlSocketClient(path, TIMEOUT), 'stats'))


def test_full_listen_backlog(serve):
    # A master whose control thread never accepts: once its backlog is full, connect(2) fails at once with EAGAIN.
    server = serve(answer(), backlog=0)
    server.release.set()  # stop accepting
    wait_for(lambda: not server._accepting.is_alive(), 5, 'the fault server to stop accepting')
    held = []
    try:

        def backlog_full():
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.setblocking(False)
            try:
                conn.connect(server.path)
            except BlockingIOError:
                conn.close()
                return True
            held.append(conn)
            return False

        wait_for(backlog_full, 5, 'the listen backlog to fill')
        fails(
            SocketTimeout,
            server.path,
            lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats'),
            'not accepting',
        )
    finally:
        for conn in held:
            conn.close()


def test_long_path_beyond_sun_path(serve, sock_dir):
    # /host/run/user/... under a container mount can pass the 107-byte sun_path limit.
    name = os.path.join(*(['d' * 40] * 3), 'gunicorn.ctl')
    os.makedirs(os.path.join(sock_dir, os.path.dirname(name)))
    server = serve(answer(), name=name)
    assert len(server.path) > 107
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert show(client, 'stats').pid == 1000
    server.stop()
    os.unlink(server.path)
    fails(SocketMissing, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats'))


# Permissions


def test_permission_message_names_owners_modes_and_the_fix(sock_dir):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
    os.chmod(path, 0o600)
    os.chmod(sock_dir, 0o700)
    message = cs.permission_denied_message(path, OSError(errno.EACCES, 'Permission denied'))
    own = os.stat(path)
    assert path in message and 'Permission denied' in message
    assert f'socket {path}: owner uid {own.st_uid} gid {own.st_gid} mode 0600' in message
    assert f'parent {sock_dir}: owner uid {own.st_uid} gid {own.st_gid} mode 0700' in message
    assert f'the Agent runs as uid {os.getuid()}' in message
    assert 'control_socket_mode = 0o660' in message and 'group' in message and 'traversable' in message


def test_permission_message_when_nothing_can_be_stat(sock_dir):
    path = os.path.join(sock_dir, 'gone', 'gunicorn.ctl')
    message = cs.permission_denied_message(path, PermissionError(errno.EACCES, 'Permission denied'))
    assert 'not stat-able' in message and 'control_socket_mode = 0o660' in message


def test_permission_error_is_mapped_at_the_boundary(sock_dir, monkeypatch):
    path = os.path.join(sock_dir, 'gunicorn.ctl')

    def refuse(sock, target):
        raise OSError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(cs, '_connect_unix', refuse)
    fails(
        SocketPermissionDenied,
        path,
        lambda: show(ControlSocketClient(path, TIMEOUT), 'stats'),
        'control_socket_mode = 0o660',
    )


@pytest.mark.skipif(os.geteuid() != 0, reason='dropping to another user needs root')
@pytest.mark.parametrize('socket_mode, dir_mode', [(0o000, 0o755), (0o666, 0o700)], ids=['socket-000', 'dir-0700'])
def test_real_permission_denied_for_an_unprivileged_user(listener, sock_dir, socket_mode, dir_mode):
    _, path = listener
    os.chmod(path, socket_mode)
    os.chmod(sock_dir, dir_mode)
    with timed() as elapsed:
        kind, message = query_as_nobody(path)
    assert elapsed[0] < MARGIN
    assert kind == 'SocketPermissionDenied', message
    assert path in message and 'control_socket_mode = 0o660' in message
    assert f'mode {socket_mode:04o}' in message or 'not stat-able' in message
    assert f'mode {dir_mode:04o}' in message
    assert 'the Agent runs as uid 65534' in message


@pytest.mark.skipif(os.geteuid() != 0, reason='dropping to another user needs root')
def test_the_suggested_fix_works_for_an_unprivileged_user(listener, sock_dir):
    # control_socket_mode = 0o660 plus a group the Agent's user belongs to, and a directory that group can traverse.
    sock, path = listener
    os.chown(path, 0, 65534)
    os.chmod(path, 0o660)
    os.chown(sock_dir, 0, 65534)
    os.chmod(sock_dir, 0o710)
    assert query_as_nobody(path, sock) == ('ok', '')


def test_every_os_error_is_mapped():
    # httpx's rule: no exception type escapes the boundary unmapped.
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for exc_type in {OSError, *subclasses(OSError)}:
        try:
            exc = exc_type(errno.EIO, 'boom')
        except TypeError:
            continue
        mapped = cs._map_error(exc, '/run/x/gunicorn.ctl', 'connecting', 1.0)
        assert isinstance(mapped, ControlSocketError), exc_type
        assert '/run/x/gunicorn.ctl' in str(mapped)
    assert isinstance(cs._map_error(ValueError('x'), '/p', 'reading', 1.0), ProtocolError)
    assert isinstance(cs._map_error(struct.error('x'), '/p', 'reading', 1.0), ProtocolError)


# Pipelining: several requests in one write, replies read back in order


def replies_of(client: ControlSocketClient, *commands: str) -> list:
    return list(client.query_many(commands))


def test_requests_are_pipelined_in_one_connection(serve):
    # This server reads both requests before answering either: a client waiting for the first reply before sending
    # the second would time out here.
    def both_then_answer(conn, srv):
        requests = [srv.read(conn), srv.read(conn)]
        for request in requests:
            send_json(conn, ok(request, {'command': request['command']}))
        srv.release.wait(10)

    server = serve(both_then_answer)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert replies_of(client, 'show stats', 'show workers') == [
            {'command': 'show stats'},
            {'command': 'show workers'},
        ]
    assert client.connects == 1 and [r['id'] for r in server.requests] == [1, 2]


def test_pipelined_replies_keep_their_order_and_ids_across_exchanges(serve):
    server = serve(answer(lambda request: {'command': request['command']}))
    with ControlSocketClient(server.path, TIMEOUT) as client:
        commands = sorted(cs.ALLOWED_COMMANDS)
        assert replies_of(client, *commands) == [{'command': c} for c in commands]
        assert client.query('show stats') == {'command': 'show stats'}
        assert replies_of(client, 'show config', 'show all') == [{'command': 'show config'}, {'command': 'show all'}]
    assert server.accepted == 1 and [r['id'] for r in server.requests] == list(range(1, 9))


def test_a_pipelined_error_reply_does_not_stop_the_others(serve):
    server = serve(refuses_listeners)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        stats, failed, workers = replies_of(client, 'show stats', 'show listeners', 'show workers')
    assert stats == workers == STATS
    assert isinstance(failed, CommandFailed) and 'Unknown show target' in str(failed) and failed.path == server.path
    assert server.accepted == 1


def test_every_pipelined_command_is_checked_before_anything_is_sent(serve):
    server = serve(answer())
    client = ControlSocketClient(server.path, TIMEOUT)
    with pytest.raises(ValueError, match='refusing'):
        client.query_many(['show stats', 'reload'])
    assert client.connects == 0 and server.accepted == 0


def test_only_the_unanswered_requests_are_asked_again_after_a_drop(serve):
    # A fork right after the first reply: Gunicorn closes the connection with the second request read or not.
    def one_answer_per_connection(conn, srv):
        send_json(conn, ok(srv.read(conn), {'connection': srv.accepted}))

    server = serve(one_answer_per_connection)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        assert replies_of(client, 'show stats', 'show workers') == [{'connection': 1}, {'connection': 2}]
    assert client.connects == 2
    # The first connection was closed with `show workers` unread (ECONNRESET for the client, not only EOF); the
    # retry sends it alone, under a new id.
    assert [(r['id'], r['command']) for r in server.requests] == [(1, 'show stats'), (3, 'show workers')]


def test_a_server_that_closes_between_two_pipelined_replies(serve):
    # Both requests read, only the first answered, then a clean close: EOF where the second reply should start.
    def read_both_answer_one(conn, srv):
        if srv.accepted == 1:
            first, _ = srv.read(conn), srv.read(conn)
            send_json(conn, ok(first, {'n': 1}))
        else:
            answer(lambda request: {'n': 2})(conn, srv)

    server = serve(read_both_answer_one)
    with ControlSocketClient(server.path, TIMEOUT) as client:
        replies = client.query_many(('show stats', 'show workers'))
        assert next(replies) == {'n': 1}
        assert list(replies) == [{'n': 2}]
    assert client.connects == 2
    assert [(r['id'], r['command']) for r in server.requests][-1] == (3, 'show workers')


def test_a_server_that_answers_only_the_first_pipelined_request_times_out(serve):
    def stats_only(conn, srv):
        while (request := srv.read(conn)) is not None:
            if request['command'] == 'show stats':
                send_json(conn, ok(request, STATS))
        srv.release.wait(10)

    server = serve(stats_only)
    client = ControlSocketClient(server.path, TIMEOUT)
    replies = client.query_many(('show stats', 'show workers'))
    assert next(replies) == STATS
    fails(SocketTimeout, server.path, lambda: next(replies), "'show workers'")
    # The silent second reply was given up once, asked again on a fresh connection, then the deadline came.
    assert server.accepted >= 2


@pytest.mark.parametrize(
    'second, error, fragment',
    [
        (struct.pack('>I', 2**31), ProtocolError, 'max_frame_bytes'),
        (struct.pack('>I', 5) + b'{oops', ProtocolError, 'not UTF-8 JSON'),
        (struct.pack('>I', 100) + b'{"id"', ProtocolError, 'mid-frame'),
    ],
    ids=['huge-length', 'garbage', 'cut'],
)
def test_a_bad_second_reply_is_mapped_and_leaves_the_first(serve, second, error, fragment):
    def good_then_bad(conn, srv):
        first, _ = srv.read(conn), srv.read(conn)
        # Both frames in one write: the client gets them from one recv() and must still split them right.
        conn.sendall(cs.encode_frame(ok(first, STATS)) + second)
        if fragment != 'mid-frame':
            srv.release.wait(10)

    server = serve(good_then_bad)
    client = ControlSocketClient(server.path, 30.0)
    replies = client.query_many(('show stats', 'show workers'))
    assert next(replies) == STATS
    with timed() as elapsed:
        assert fragment in str_fails(error, server.path, lambda: next(replies))
    assert elapsed[0] < MARGIN  # refused or noticed at once, not waited for until the server lets go (10 s)
    assert client._sock is None


def test_an_abandoned_iterator_does_not_put_the_connection_out_of_step(serve):
    server = serve(answer(lambda request: {'command': request['command']}))
    with ControlSocketClient(server.path, TIMEOUT) as client:
        replies = client.query_many(('show stats', 'show workers', 'show config'))
        assert next(replies) == {'command': 'show stats'}
        del replies
        # Two replies were still due on the old connection: a new one is opened rather than reading them as these.
        assert client.query('show listeners') == {'command': 'show listeners'}
    assert client.connects == 2


def test_a_slow_answer_is_waited_for_with_precise_timeouts(serve):
    # Slower than the short blocking first wait: the client goes on waiting, on the same connection.
    def slow(conn, srv):
        while (request := srv.read(conn)) is not None:
            if srv.release.wait(cs._QUICK_WAIT_SECONDS * 3):
                return
            send_json(conn, ok(request, STATS))

    server = serve(slow)
    with ControlSocketClient(server.path, 2.0) as client:
        assert replies_of(client, 'show stats', 'show workers') == [STATS, STATS]
    assert client.connects == 1


def test_a_send_that_cannot_finish_is_bounded_by_the_deadline(serve, monkeypatch):
    # Allow-listed requests are too small to fill a socket buffer; a peer that never reads a large one shows that
    # the send still ends at the deadline.
    server = serve(lambda conn, srv: srv.release.wait(10))
    monkeypatch.setattr(cs, '_request', lambda request_id, command: cs.encode_frame({'pad': 'x' * (3 << 20)}))
    error = fails(
        SocketTimeout, server.path, lambda: show(ControlSocketClient(server.path, TIMEOUT), 'stats'), 'sending'
    )
    assert isinstance(error.__cause__, TimeoutError)


def test_the_request_frames_are_what_encode_frame_gives():
    for command in cs.ALLOWED_COMMANDS:
        assert cs._request(7, command) == cs.encode_frame({'id': 7, 'command': command, 'args': []})
