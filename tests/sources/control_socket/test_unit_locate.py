"""Where a master's control socket is (candidates from the kernel's view, on fake proc trees) and whether the master
is what answers there (verification against fault servers: real Unix sockets of this process)."""

from __future__ import annotations

import os
import socket

import pytest

from datadog_checks.gunicorn.sources.control_socket.client import (
    ControlSocketError,
    ProtocolError,
    SocketMissing,
    SocketTimeout,
)
from datadog_checks.gunicorn.sources.control_socket.locate import (
    Candidate,
    ForeignOwner,
    Identity,
    LinkedPath,
    ListenerWithoutFile,
    NotASocket,
    Unverified,
    WrongMaster,
    candidates,
    default_paths,
    explicit_socket_path,
    home_directory,
    identity,
    verified_exchange,
)
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ...fakeapp import SS_UNCONNECTED
from ...fakeproc import FakeProc
from .fakes import MARGIN, STATS, TIMEOUT, answer, ok, send_json, show, timed

# The fault servers run in this process: the kernel names it as the listening process (SO_PEERCRED), and they answer
# `show stats` with pid 1000, as a master in its own PID namespace would.
ME = Identity(pid=os.getpid(), ns_pid=1000, uid=os.geteuid())
PROC = ProcFS('/proc')


def here(path: str, source: str = 'a test', own: bool = True) -> Candidate:
    return Candidate(path, path, source, own)


def verify(paths, who: Identity = ME, then=(), timeout: float = TIMEOUT):
    return verified_exchange(PROC, [here(p) if isinstance(p, str) else p for p in paths], who, then, timeout)


def refusal(paths, who: Identity = ME) -> ControlSocketError:
    with timed() as elapsed, pytest.raises(Unverified) as info:
        verify(paths, who)
    assert elapsed[0] < MARGIN
    return info.value.telling


# Where to look


def master(fake, *argv, uid=1000, environ=None, cwd=None):
    fake.add(100, 1, list(argv) or ['gunicorn: master [a]'])
    fake.set_status(100, uid)
    if environ is not None:
        fake.set_environ(100, **environ)
    if cwd is not None:
        fake.set_cwd(100, cwd)
    return fake


def where(fake, procfs, configured=None, uid=1000, home='/home/app'):
    found = candidates(procfs, procfs.read_stat(100), uid, configured, home_of=lambda _: home)
    return None if found is None else [(c.path, c.source, c.own) for c in found]


def test_the_configured_path_alone(fake, procfs):
    master(fake)
    assert where(fake, procfs, configured='/run/gunicorn/a.ctl') == [
        ('/run/gunicorn/a.ctl', 'the control_socket option', True)
    ]


def test_with_its_fds_only_the_listeners_the_master_holds_alone_are_candidates(fake, procfs):
    master(fake)
    fake.add(101, 100, 'gunicorn: worker [a]')
    fake.set_children(100, [101])
    fake.set_fds(100, '/dev/null', 'socket:[20]', 'socket:[40]', 'socket:[50]')
    fake.set_fds(101, 'socket:[40]')
    fake.set_net(
        100,
        unix=[
            (True, SS_UNCONNECTED, 50, '/srv/ctl/orders.ctl'),  # --control-socket with another name
            (True, SS_UNCONNECTED, 20, '/srv/app/.gunicorn/gunicorn.ctl'),  # HOME is not the passwd home
            (True, SS_UNCONNECTED, 30, '/home/other/.gunicorn/gunicorn.ctl'),  # another app's, same namespace
            (True, SS_UNCONNECTED, 40, '/run/app.sock'),  # the app's own bind, which its workers hold too
        ],
    )
    # No guessed path: a master that holds a socket nowhere else has none there.
    assert where(fake, procfs) == [
        ('/srv/app/.gunicorn/gunicorn.ctl', "the master's own listening socket", True),
        ('/srv/ctl/orders.ctl', "the master's own listening socket", True),
    ]


def test_before_a_worker_is_read_only_a_held_socket_named_gunicorn_ctl_is_taken(fake, procfs):
    master(fake)
    fake.set_fds(100, 'socket:[40]', 'socket:[50]')
    fake.set_net(100, unix=[(True, SS_UNCONNECTED, 50, '/srv/ctl/orders.ctl'), (True, SS_UNCONNECTED, 40, '/a.sock')])
    assert where(fake, procfs) == []  # either may be the app's bind: its workers would tell
    fake.set_net(100, unix=[(True, SS_UNCONNECTED, 50, '/srv/gunicorn.ctl'), (True, SS_UNCONNECTED, 40, '/a.sock')])
    assert [path for path, _, _ in where(fake, procfs)] == ['/srv/gunicorn.ctl']


def test_a_master_that_holds_no_socket_has_no_candidate(fake, procfs):
    # Gunicorn before 25.1 beside another app's default socket in the same HOME: nothing is the master's.
    master(fake)
    fake.set_fds(100, '/dev/null')
    fake.set_net(100, unix=[(True, SS_UNCONNECTED, 30, '/home/app/.gunicorn/gunicorn.ctl')])
    assert where(fake, procfs) == []


def test_without_access_to_its_fds_listening_guesses_are_candidates_not_its_own(fake, procfs):
    master(fake)
    fake.set_net(
        100,
        unix=[
            (True, SS_UNCONNECTED, 30, '/srv/app/.gunicorn/gunicorn.ctl'),
            (True, SS_UNCONNECTED, 31, '/home/app/.gunicorn/gunicorn.ctl'),
        ],
    )
    assert where(fake, procfs) == [
        ('/home/app/.gunicorn/gunicorn.ctl', "Gunicorn's default for the master's user", False),
        ('/srv/app/.gunicorn/gunicorn.ctl', 'a control socket listening in its network namespace', False),
    ]


def test_without_access_to_its_fds_a_guess_where_nothing_listens_is_dropped(fake, procfs):
    master(fake)
    fake.set_net(100, unix=[])
    assert where(fake, procfs) == []


def test_the_masters_environment_and_command_line(fake, procfs):
    master(
        fake,
        '/venv/bin/python',
        '/venv/bin/gunicorn',
        '--control-socket',
        'run/app.ctl',
        'app:app',
        environ={'HOME': '/srv/app', 'XDG_RUNTIME_DIR': '/run/user/1000', 'SECRET': 'x'},
        cwd='/srv/app',
    )
    fake.set_net(
        100,
        unix=[
            (True, SS_UNCONNECTED, 30, '/run/user/1000/gunicorn.ctl'),
            (True, SS_UNCONNECTED, 31, '/home/app/.gunicorn/gunicorn.ctl'),
        ],
    )
    assert where(fake, procfs) == [
        ('/srv/app/run/app.ctl', "--control-socket on the master's command line", True),
        ('/run/user/1000/gunicorn.ctl', "Gunicorn's default in the master's environment", False),
        ('/home/app/.gunicorn/gunicorn.ctl', "Gunicorn's default for the master's user", False),
    ]


def test_a_disabled_socket(fake, procfs):
    master(fake, '/venv/bin/gunicorn', '--no-control-socket', 'app:app')
    assert where(fake, procfs) is None


def test_a_relative_path_without_the_working_directory_is_not_guessed(fake, procfs):
    master(fake, '/venv/bin/gunicorn', '--control-socket=app.ctl', 'app:app')
    assert all(os.path.isabs(path) for path, _, _ in where(fake, procfs))


def test_candidate_helpers():
    assert explicit_socket_path(['gunicorn', '--control-socket', 'a', '--control-socket=b']) == 'b'
    assert explicit_socket_path(['gunicorn', '--control-socket']) is None
    assert default_paths({'HOME': '/h'}) == ['/h/.gunicorn/gunicorn.ctl']
    assert default_paths({}) == []
    assert home_directory(0) == '/root' and home_directory(2**31 - 2) is None


def test_a_container_path_is_reached_through_the_host_root(tmp_path):
    host = tmp_path / 'host'
    (host / 'proc' / '100').mkdir(parents=True)
    (host / 'run' / 'user' / '0').mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(host / 'run' / 'user' / '0' / 'gunicorn.ctl'))
        FakeProc(host / 'proc').set_net(100, unix=[(True, SS_UNCONNECTED, 7, '/run/user/0/gunicorn.ctl')])
        procfs = ProcFS(str(host / 'proc'))
        found = candidates(procfs, _stat(100), 0, home_of=lambda _: None)
    (first,) = [c for c in found if c.path == '/run/user/0/gunicorn.ctl']
    assert first.reach == str(host / 'run' / 'user' / '0' / 'gunicorn.ctl')
    assert first.beneath == str(host)  # walked from the host's root without following links


def _stat(pid):
    from datadog_checks.gunicorn.sources.procfs import Stat

    return Stat(pid, 'gunicorn: maste', 'S', 1, 0, 0, 1, 1000, 1)


def test_identity_reads_the_pid_in_its_own_namespace(fake, procfs):
    master(fake)
    fake.set_status(100, 1000, ns_pids=(1,))
    fake.add(101, 100, 'gunicorn: master [a.2]')
    fake.set_status(101, 1000, ns_pids=(7,))
    who = identity(procfs, procfs.read_stat(100), [procfs.read_stat(101), _stat(999)])
    assert who == Identity(100, 1, 1000, {7: 101})
    assert who.answers() == {1: 100, 7: 101}


# Which master answers


def test_the_master_is_accepted(serve):
    server = serve(answer())
    verified = verify([server.path], then=['show config'])
    with verified.client as client:
        assert verified.stats.pid == 1000 and verified.upgrade_pid is None
        assert next(verified.replies)['pid'] == 1000  # the fault server answers every command with stats
        assert show(client, 'config').threads is None  # still connected, for the rest of the run


def test_another_process_listening_is_refused_before_anything_is_sent(serve):
    server = serve(answer())
    stranger = Identity(pid=1, ns_pid=1000, uid=os.geteuid())  # the kernel names this process, not pid 1
    error = refusal([server.path], stranger)
    assert isinstance(error, WrongMaster) and error.answering_pid == os.getpid() and error.expected_pid == 1
    assert server.requests == []  # not even `show stats` went to a process that is not the master


def test_another_master_answering_is_refused_and_nothing_more_is_read(serve):
    server = serve(answer(lambda r: dict(STATS, pid=2000)))
    with pytest.raises(Unverified) as info:
        verify([server.path], then=['show workers'])
    error = info.value.telling
    assert isinstance(error, WrongMaster) and (error.expected_pid, error.answering_pid) == (os.getpid(), 2000)
    assert str(os.getpid()) in str(error) and '2000' in str(error)


def test_the_new_master_of_a_usr2_upgrade_may_answer(serve):
    server = serve(answer())
    old = Identity(pid=1, ns_pid=999, uid=os.geteuid(), upgrades={1000: os.getpid()})
    verified = verify([server.path], old)
    with verified.client:
        assert verified.upgrade_pid == os.getpid()


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another user needs root')
def test_a_socket_owned_by_another_user_is_not_used(serve):
    server = serve(answer())
    os.chown(server.path, 65534, 65534)
    error = refusal([server.path])
    assert isinstance(error, ForeignOwner) and (error.owner, error.expected) == (65534, os.geteuid())
    assert server.accepted == 0  # not even connected to


@pytest.mark.parametrize('kind', ['a regular file', 'a directory', 'a FIFO', 'a character device'])
def test_what_is_not_a_socket_is_said_for_what_it_is(sock_dir, kind):
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    if kind == 'a regular file':
        with open(path, 'w') as f:
            f.write('secret')
    elif kind == 'a directory':
        os.mkdir(path)
    elif kind == 'a FIFO':
        os.mkfifo(path)
    else:
        os.symlink('/dev/null', path)
    error = refusal([path])
    assert isinstance(error, NotASocket) and error.kind == kind and 'secret' not in str(error)
    assert 'stale' not in str(error) and 'exited' not in str(error)


def test_a_listener_whose_file_is_gone(sock_dir):
    # After a USR2 upgrade Gunicorn's old master deletes the file of the new one, which still listens.
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        os.unlink(path)
        error = refusal([path])
    assert isinstance(error, ListenerWithoutFile)
    assert isinstance(refusal([path]), SocketMissing) and not isinstance(refusal([path]), ListenerWithoutFile)


def test_a_reply_that_is_no_object_is_a_protocol_error(serve):
    server = serve(lambda conn, srv: send_json(conn, ok(srv.read(conn), ['not', 'stats'])))
    error = refusal([server.path])
    assert isinstance(error, ProtocolError) and 'not an object' in str(error)


def test_the_failure_told_is_at_a_path_tied_to_the_master(serve, sock_dir):
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    missing = os.path.join(sock_dir, 'missing.ctl')
    # Another app's socket merely seen in the namespace says nothing about this master; its own path does.
    with pytest.raises(Unverified) as info:
        verify([here(missing), here(other.path, own=False)])
    assert isinstance(info.value.telling, SocketMissing)
    message = str(info.value)
    assert 'tried 2 paths' in message and missing in message and other.path in message
    with pytest.raises(Unverified) as info:
        verify([here(missing), here(other.path)])
    assert isinstance(info.value.telling, WrongMaster)
    with pytest.raises(SocketMissing, match='no candidate'):
        verify([])


def test_the_failure_described_is_at_a_listening_path_tied_to_the_master_before_one_merely_listening(serve, sock_dir):
    # Without access to its fds, another app's socket listening in the namespace is a candidate too: diagnose describes
    # a path tied to the master first, and a listener of unknown owner only when nothing is tied to it.
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    ours = serve(answer(lambda r: dict(STATS, pid=3000)), name='ours.ctl')
    guessed = os.path.join(sock_dir, 'missing.ctl')
    with pytest.raises(Unverified) as info:
        verify([here(guessed, own=False), Candidate(other.path, other.path, 'a test', own=False, seen=True)])
    assert info.value.observed.path == other.path and not info.value.tied
    with pytest.raises(Unverified) as info:
        verify([Candidate(other.path, other.path, 'a test', own=False, seen=True), here(ours.path)])
    assert info.value.observed.path == ours.path and info.value.tied  # what is tied to it comes before a listener
    with pytest.raises(Unverified) as info:
        verify(
            [
                guessed,
                Candidate(other.path, other.path, 'a test', own=False, seen=True),
                Candidate(ours.path, ours.path, 'a test', own=True, seen=True),
            ]
        )
    assert info.value.observed.path == ours.path


def test_candidates_are_tried_in_order_until_one_proves_to_be_the_masters(serve, sock_dir):
    other = serve(answer(lambda r: dict(STATS, pid=2000)), name='other.ctl')
    ours = serve(answer(), name='ours.ctl')
    verified = verify([os.path.join(sock_dir, 'missing.ctl'), other.path, ours.path])
    with verified.client:
        assert verified.candidate.reach == ours.path and verified.stats.pid == 1000
    assert ours.accepted == 1


def test_each_candidate_gets_a_share_of_one_deadline(serve):
    # A silent socket first in the list (a stopped master) must not starve the next.
    silent = serve(lambda conn, srv: (srv.read(conn), srv.release.wait(10)), name='silent.ctl')
    ours = serve(answer(), name='ours.ctl')
    with timed() as elapsed:
        verified = verify([silent.path, ours.path], timeout=0.6)
    with verified.client as client:
        assert verified.candidate.reach == ours.path
        assert elapsed[0] < MARGIN
        # The returned client keeps what is left of the whole deadline.
        assert 0 < client.deadline.remaining() < 0.6
    with timed() as elapsed, pytest.raises(Unverified) as info:
        verify([silent.path, silent.path])
    assert elapsed[0] < MARGIN and isinstance(info.value.telling, SocketTimeout)


def test_a_found_path_through_a_link_is_not_followed_and_nothing_connects(serve, sock_dir):
    # A link planted where Gunicorn's default would be, pointing at another service's socket: never connected to.
    server = serve(answer(lambda r: STATS))
    link_dir = os.path.join(sock_dir, 'home')
    os.symlink(os.path.dirname(server.path), link_dir)
    linked = os.path.join(link_dir, os.path.basename(server.path))
    found = Candidate(linked, linked, "Gunicorn's default for the master's user", own=False, beneath='/')
    with pytest.raises(Unverified) as info:
        verify([found])
    assert isinstance(info.value.failures[0], LinkedPath) and not info.value.tied
    assert server.accepted == 0
    configured = Candidate(linked, linked, 'the control_socket option')  # what the user wrote may be a link
    assert verify([configured]).stats.pid == 1000


def test_a_found_path_is_connected_through_its_descriptor(serve):
    server = serve(answer(lambda r: STATS))
    found = Candidate(server.path, server.path, "the master's own listening socket", beneath='/')
    assert verify([found]).stats.pid == 1000
