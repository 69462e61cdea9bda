"""Where a master's control socket is, and which master answers on it."""

from __future__ import annotations

import os
from typing import TypeVar

import pytest

from datadog_checks.gunicorn.sources.control_socket import locate
from datadog_checks.gunicorn.sources.control_socket.client import (
    ControlSocketClient,
    ControlSocketError,
    SocketMissing,
    SocketTimeout,
    WrongMaster,
)
from datadog_checks.gunicorn.sources.control_socket.locate import candidate_paths, verified_exchange

from .fakes import MARGIN, STATS, TIMEOUT, answer, ok, send_json, send_raw, show, str_fails, timed

E = TypeVar('E', bound=ControlSocketError)


# Which master answers


def test_verify_master_accepts_its_own_master(serve):
    server = serve(answer())
    stats = locate.verify_master(ControlSocketClient(server.path, TIMEOUT), 1000)
    assert stats.pid == 1000


def test_verify_master_rejects_another_master(serve):
    server = serve(answer())
    client = ControlSocketClient(server.path, TIMEOUT)
    message = str_fails(WrongMaster, server.path, lambda: locate.verify_master(client, 2000), '--control-socket')
    assert '1000' in message and '2000' in message
    with pytest.raises(WrongMaster) as info:
        locate.verify_master(ControlSocketClient(server.path, TIMEOUT), 2000)
    assert (info.value.expected_pid, info.value.actual_pid) == (2000, 1000)


def test_connect_verified_skips_missing_and_foreign_sockets(serve, sock_dir):
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    ours = serve(answer(), name='ours.ctl')
    missing = os.path.join(sock_dir, 'missing.ctl')
    client, stats = locate.connect_verified([missing, other.path, ours.path], 1000, TIMEOUT)
    with client:
        assert client.path == ours.path and stats.pid == 1000
        # Still connected: the rest of the run reuses the connection and its deadline.
        assert show(client, 'config').workers is None
    assert ours.accepted == 1


def test_connect_verified_reports_the_most_actionable_failure(serve, sock_dir):
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    missing = os.path.join(sock_dir, 'missing.ctl')
    with pytest.raises(WrongMaster) as info:
        locate.connect_verified([missing, other.path], 1000, TIMEOUT)
    message = str(info.value)
    assert 'tried 2 paths' in message and missing in message and other.path in message
    assert info.value.actual_pid == 2000
    assert isinstance(info.value.__cause__, WrongMaster)

    with pytest.raises(SocketMissing, match='missing.ctl'):
        locate.connect_verified([missing], 1000, TIMEOUT)
    with pytest.raises(SocketMissing, match='disabled'):
        locate.connect_verified([], 1000, TIMEOUT)


def test_connect_verified_gives_each_candidate_a_share_of_one_deadline(serve):
    # A silent socket first in the list (another master, stopped) must not starve ours.
    silent = serve(lambda conn, srv: (srv.read(conn), srv.release.wait(10)), name='silent.ctl')
    ours = serve(answer(), name='ours.ctl')
    with timed() as elapsed:
        client, stats = locate.connect_verified([silent.path, ours.path], 1000, 0.6)
    with client:
        assert client.path == ours.path and stats.pid == 1000
        assert 0.2 < elapsed[0] < MARGIN
        # The rest of the run keeps the one overall deadline, not the candidate's share.
        assert 0 < client.deadline.remaining() < 0.6 - elapsed[0] + 0.01
    with timed() as elapsed, pytest.raises(SocketTimeout) as info:
        locate.connect_verified([silent.path, silent.path], 1000, TIMEOUT)
    assert elapsed[0] < MARGIN and 'tried 2 paths' in str(info.value)


# Where the socket is


def home(uid: int) -> str | None:
    return {0: '/root', 1000: '/home/app'}.get(uid)


@pytest.mark.parametrize(
    'uid, cmdline, cwd, root, expected',
    [
        (
            1000,
            ['gunicorn: master [app]', '', ''],
            None,
            '',
            ['/run/user/1000/gunicorn.ctl', '/home/app/.gunicorn/gunicorn.ctl'],
        ),
        (
            1000,
            ['/venv/bin/python', '/venv/bin/gunicorn', '--control-socket', '/srv/app.ctl', 'app:app'],
            '/srv',
            '',
            ['/srv/app.ctl', '/run/user/1000/gunicorn.ctl', '/home/app/.gunicorn/gunicorn.ctl', '/srv/gunicorn.ctl'],
        ),
        (
            1000,
            ['gunicorn', '--control-socket=run/app.ctl', 'app:app'],
            '/srv',
            '',
            [
                '/srv/run/app.ctl',
                '/run/user/1000/gunicorn.ctl',
                '/home/app/.gunicorn/gunicorn.ctl',
                '/srv/gunicorn.ctl',
            ],
        ),
        # A relative explicit path without the cwd cannot be resolved (cwd needs privileges).
        (
            1000,
            ['gunicorn', '--control-socket', 'app.ctl'],
            None,
            '',
            ['/run/user/1000/gunicorn.ctl', '/home/app/.gunicorn/gunicorn.ctl'],
        ),
        # The last occurrence wins, as with argparse; --control-socket-mode is another option.
        (
            0,
            ['gunicorn', '--control-socket', '/a.ctl', '--control-socket-mode', '432', '--control-socket=/b.ctl'],
            None,
            '',
            ['/b.ctl', '/run/user/0/gunicorn.ctl', '/root/.gunicorn/gunicorn.ctl'],
        ),
        # No passwd entry for the uid (the Agent's container may not know it): no home candidate.
        (4242, [], '/srv', '', ['/run/user/4242/gunicorn.ctl', '/srv/gunicorn.ctl']),
        # Duplicates removed: the explicit path is the 25.1.0 default in the cwd.
        (
            0,
            ['gunicorn', '--control-socket', 'gunicorn.ctl'],
            '/srv/',
            '',
            ['/srv/gunicorn.ctl', '/run/user/0/gunicorn.ctl', '/root/.gunicorn/gunicorn.ctl'],
        ),
        # The host's filesystem seen from a container.
        (
            1000,
            ['gunicorn', '--control-socket', '/srv/app.ctl'],
            None,
            '/host/',
            ['/host/srv/app.ctl', '/host/run/user/1000/gunicorn.ctl', '/host/home/app/.gunicorn/gunicorn.ctl'],
        ),
        (1000, ['gunicorn', '--no-control-socket', 'app:app'], '/srv', '', []),
        # A trailing --control-socket without its value is ignored.
        (0, ['gunicorn', '--control-socket'], None, '', ['/run/user/0/gunicorn.ctl', '/root/.gunicorn/gunicorn.ctl']),
    ],
    ids=[
        'titled',
        'explicit',
        'explicit-relative',
        'relative-no-cwd',
        'last-wins',
        'no-home',
        'dedup',
        'root',
        'disabled',
        'dangling',
    ],
)
def test_candidate_paths(uid, cmdline, cwd, root, expected):
    assert candidate_paths(uid, cmdline, cwd, root=root, home_of=home) == expected


def test_home_directory_uses_passwd():
    assert locate.home_directory(0) == '/root'
    assert locate.home_directory(2**31 - 2) is None


def test_verified_exchange_reads_nothing_more_from_another_master(serve):
    # The second reply is garbage: reading it would be a ProtocolError, so WrongMaster proves it was not read.
    def other_master(conn, srv):
        first, _ = srv.read(conn), srv.read(conn)
        send_json(conn, ok(first, dict(STATS, pid=2000)))
        send_raw(conn, b'{oops')
        srv.release.wait(10)

    server = serve(other_master)
    with pytest.raises(WrongMaster) as info:
        verified_exchange([server.path], 1000, ['show workers'], TIMEOUT)
    assert info.value.actual_pid == 2000


def test_verified_exchange_gives_the_other_replies_after_the_stats(serve):
    server = serve(answer(lambda request: STATS if request['command'] == 'show stats' else {'workers': []}))
    client, stats, replies = verified_exchange([server.path], 1000, ['show workers', 'show config'], TIMEOUT)
    with client:
        assert stats.pid == 1000
        assert list(replies) == [{'workers': []}, {'workers': []}]
    assert server.accepted == 1 and [r['command'] for r in server.requests] == [
        'show stats',
        'show workers',
        'show config',
    ]
