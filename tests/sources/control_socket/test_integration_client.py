"""The control-socket client against real Gunicorn masters (27.0.1 has the socket, 23.0.0 has none).

Only `show` commands are ever sent; the server is changed through signals, as an operator would. The field sets
asserted here are what 27.0.1 really sends, so a Gunicorn release that renames a field fails here first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from datadog_checks.gunicorn.sources.control_socket import client as cs
from datadog_checks.gunicorn.sources.control_socket import locate
from datadog_checks.gunicorn.sources.control_socket.client import (
    ControlSocketClient,
    SocketMissing,
    SocketTimeout,
)
from datadog_checks.gunicorn.sources.control_socket.replies import (
    dirty_heartbeat_ages,
    parse_config,
    parse_listeners,
    parse_stats,
    web_heartbeat_ages,
)
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ...common import wait_for
from ...gunicorn_env import Gunicorn, running
from .fakes import query_as_nobody, show

pytestmark = pytest.mark.integration

T = TypeVar('T')

# Generous next to the milliseconds a live master takes, so a loaded machine does not fail the tests.
TIMEOUT = 2.0
PROCFS = ProcFS('/proc')

DIRTY = ['--dirty-app', 'dirty:Tasks', '--dirty-workers', '1']

FIELDS = {
    'show stats': {
        'uptime',
        'pid',
        'workers_current',
        'workers_target',
        'workers_spawned',
        'workers_killed',
        'reloads',
        'dirty_arbiter_pid',
    },
    'show workers': {'workers', 'count'},
    'show all': {'arbiter', 'web_workers', 'web_worker_count', 'dirty_arbiter', 'dirty_workers', 'dirty_worker_count'},
    'show config': {
        'bind',
        'workers',
        'worker_class',
        'threads',
        'timeout',
        'graceful_timeout',
        'keepalive',
        'max_requests',
        'max_requests_jitter',
        'worker_connections',
        'preload_app',
        'daemon',
        'pidfile',
        'proc_name',
        'reload',
        'dirty_workers',
        'dirty_apps',
        'dirty_timeout',
        'control_socket',
        'control_socket_disable',
    },
    'show listeners': {'listeners', 'count'},
}
WORKER_FIELDS = {'pid', 'age', 'booted', 'aborted', 'last_heartbeat'}
WEB_WORKER_FIELDS = {'pid', 'type', 'age', 'booted', 'last_heartbeat'}
DIRTY_WORKER_FIELDS = {'pid', 'age', 'apps', 'booted', 'last_heartbeat'}
PROCESS_FIELDS = {'pid', 'type', 'role'}
LISTENER_FIELDS = {'address', 'fd', 'type'}


def ask(path: str, query: Callable[[ControlSocketClient], T]) -> T:
    with ControlSocketClient(path, TIMEOUT) as client:
        return query(client)


def eventually(path: str, query: Callable[[ControlSocketClient], T], accept: Callable[[T], bool], what: str) -> T:
    """Poll the socket with fresh connections until `accept(answer)`; the socket may not exist yet at first."""
    seen: list[T] = []

    def attempt() -> bool:
        with contextlib.suppress(SocketMissing):
            seen.append(ask(path, query))
            return accept(seen[-1])
        return False

    try:
        wait_for(attempt, 20, what)
    except AssertionError as exc:
        raise AssertionError(f'{exc}; last answer: {seen[-1:]}') from exc
    return seen[-1]


def test_show_commands_field_names(tmp_path):
    with running(tmp_path, workers=2, args=DIRTY) as server:
        path = str(server.default_control_socket)
        # The dirty worker registers with its arbiter a little after the HTTP workers are up.
        eventually(path, lambda c: show(c, 'all')['dirty_workers'], bool, 'a dirty worker in show all')
        with ControlSocketClient(path, TIMEOUT) as client:
            replies = {command: client.query(command) for command in sorted(cs.ALLOWED_COMMANDS)}
            # The same commands pipelined in one write: the master answers each, in order, with the same fields.
            pipelined = dict(
                zip(sorted(cs.ALLOWED_COMMANDS), client.query_many(sorted(cs.ALLOWED_COMMANDS)), strict=True)
            )
        assert client.connects == 1
        assert {c: set(data) for c, data in pipelined.items()} == {c: set(data) for c, data in replies.items()}
        assert pipelined['show stats']['pid'] == server.master_pid

        for command, fields in FIELDS.items():
            assert set(replies[command]) == fields, command
        workers = replies['show workers']['workers']
        assert len(workers) == replies['show workers']['count'] == 2
        assert all(set(w) == WORKER_FIELDS for w in workers)
        everything = replies['show all']
        assert set(everything['arbiter']) == PROCESS_FIELDS and set(everything['dirty_arbiter']) == PROCESS_FIELDS
        assert all(set(w) == WEB_WORKER_FIELDS for w in everything['web_workers'])
        assert all(set(w) == DIRTY_WORKER_FIELDS for w in everything['dirty_workers'])
        listeners = replies['show listeners']['listeners']
        assert [set(entry) for entry in listeners] == [LISTENER_FIELDS]

        # The known server bug: `booted` stays false even for workers that serve requests.
        assert server.get('/')[0] == 200
        assert all(w['booted'] is False for w in ask(path, lambda c: c.query('show workers'))['workers'])

        stats = parse_stats(replies['show stats'])
        assert stats.pid == server.master_pid
        assert (stats.workers_target, stats.workers_spawned) == (2, 2)
        assert (stats.workers_killed, stats.reloads) == (0, 0)
        assert stats.uptime_seconds is not None and stats.uptime_seconds >= 0

        assert everything['arbiter']['pid'] == server.master_pid
        assert sorted(w['pid'] for w in everything['web_workers']) == server.worker_pids()
        assert all(0 <= age < 30 for age in web_heartbeat_ages(replies['show workers'], stats.uptime_seconds))
        assert len(web_heartbeat_ages(replies['show workers'], stats.uptime_seconds)) == 2
        arbiter = server.titled('gunicorn: dirty-arbiter')
        assert [everything['dirty_arbiter']['pid']] == arbiter == [stats.dirty_arbiter_pid]
        assert [w['pid'] for w in everything['dirty_workers']] == server.titled('gunicorn: dirty-worker [')
        assert len(dirty_heartbeat_ages(everything, stats.uptime_seconds)) == 1

        config = parse_config(replies['show config'])
        assert (config.worker_class, config.threads, config.timeout_seconds, config.max_requests) == ('sync', 1, 30, 0)
        assert config.bind == (server.bind,) and (config.dirty_workers, config.dirty_apps) == (1, ('dirty:Tasks',))

        # str() of the listener, with its scheme.
        assert parse_listeners(replies['show listeners']) == ('http://' + server.bind,)


def test_gthread_worker_class(tmp_path):
    with running(tmp_path, workers=1, args=['--threads', '4']) as server:
        config = eventually(
            str(server.default_control_socket), lambda c: show(c, 'config'), lambda _: True, 'show config'
        )
        assert config.worker_class == 'gthread' and config.threads == 4
        raw = ask(str(server.default_control_socket), lambda c: c.query('show config'))['worker_class']
        assert raw == "<class 'gunicorn.workers.gthread.ThreadWorker'>"


def test_counters_follow_signals(tmp_path):
    with running(tmp_path, workers=2) as server:
        path = str(server.default_control_socket)
        stats = eventually(path, lambda c: show(c, 'stats'), lambda s: s.workers_spawned == 2, 'two spawned workers')
        assert stats.pid == server.master_pid

        server.signal(signal.SIGTTIN)
        stats = eventually(
            path, lambda c: show(c, 'stats'), lambda s: (s.workers_target, s.workers_spawned) == (3, 3), 'TTIN'
        )
        wait_for(lambda: len(server.worker_pids()) == 3, 20, 'a third worker')

        # A worker killed from outside is replaced: a spawn, but not a kill by the master.
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        stats = eventually(path, lambda c: show(c, 'stats'), lambda s: s.workers_spawned == 4, 'a replacement worker')
        assert stats.workers_killed == 0 and stats.workers_target == 3
        wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 3, 20, 'the respawn')

        # HUP re-reads the configuration, so the target goes back to -w 2, and replaces every worker; the master
        # stops the three old ones itself (SIGTERM), so those do count as killed.
        server.signal(signal.SIGHUP)
        stats = eventually(
            path,
            lambda c: show(c, 'stats'),
            lambda s: (s.reloads, s.workers_spawned, s.workers_killed) == (1, 6, 3),
            'the reload',
        )
        assert stats.pid == server.master_pid and stats.workers_target == 2


def test_a_fork_during_an_open_connection_is_survived(tmp_path):
    with running(tmp_path, workers=1) as server:
        path = str(server.default_control_socket)
        eventually(path, lambda c: show(c, 'stats'), lambda s: s.workers_target == 1, 'the socket')
        # The deadline covers the client's whole life, including the wait for the new worker here.
        with ControlSocketClient(path, 30.0) as client:
            assert show(client, 'stats').workers_spawned == 1
            server.signal(signal.SIGTTIN)
            wait_for(lambda: len(server.worker_pids()) == 2, 20, 'a second worker')
            assert show(client, 'stats').workers_spawned == 2
        # Gunicorn under Python 3.11 closes the connection at the fork, so the client reconnects. Under 3.12+ the
        # control thread often cannot stop while a client is connected: the fork waits 2 s ("control socket thread
        # did not stop before fork") and the old thread keeps serving the old connection.
        assert client.connects in (1, 2)


def test_queries_survive_a_storm_of_forks(tmp_path):
    # Every fork stops and restarts the control server: open connections are closed, the socket file disappears for
    # a moment, and 27.0.1 sometimes leaks a just-accepted connection into the new worker, unanswered. A client
    # told the path is known to work must ride through all of it within its deadline.
    with running(tmp_path, workers=1) as server:
        path = str(server.default_control_socket)
        eventually(path, lambda c: show(c, 'stats'), lambda s: s.workers_target == 1, 'the socket')
        errors: list[Exception] = []
        answers = []
        reconnects = []
        refused: list[cs.CommandFailed] = []
        done = threading.Event()

        def hammer():
            while not done.is_set():
                try:
                    with ControlSocketClient(path, 1.0, wait_for_socket=True) as client:
                        # What the check sends on every run: two requests in one write.
                        stats, workers = client.query_many(('show stats', 'show workers'))
                    answers.append(parse_stats(stats))
                    # 27.0.1 iterates its worker table while a fork changes it: an error reply ("dictionary changed
                    # size during iteration") is the server's, handed back per command (the check then skips the
                    # heartbeats of that run), and never costs the stats.
                    if isinstance(workers, cs.CommandFailed):
                        refused.append(workers)
                    else:
                        assert len(workers['workers']) in (1, 2)
                    reconnects.append(client.connects - 1)
                except Exception as exc:  # anything else ends the storm as a failure, not a dead thread
                    errors.append(exc)

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        try:
            for cycle in range(20):
                server.signal(signal.SIGTTIN)
                wait_for(lambda: len(server.worker_pids()) == 2, 20, 'a second worker')
                server.signal(signal.SIGTTOU)
                wait_for(lambda: len(server.worker_pids()) == 1, 20, f'back to one worker (cycle {cycle})')
        finally:
            done.set()
            thread.join(10)
        assert errors == []
        assert all('Command failed' in str(r) for r in refused)
        # About one fork in four catches a query in flight here; none in forty would mean the race was not exercised.
        assert sum(reconnects) > 0
        assert answers[-1].workers_spawned == 21 and all(a.pid == server.master_pid for a in answers)


def found(server: Gunicorn, configured: str | None = None) -> locate.Verified:
    """The socket the check finds and verifies for this server's master."""
    stat = PROCFS.read_stat(server.master_pid)
    paths = locate.candidates(PROCFS, stat, PROCFS.read_status(stat.pid).uid, configured)
    return locate.verified_exchange(PROCFS, paths, locate.identity(PROCFS, stat), (), TIMEOUT)


def test_the_home_default_is_found_from_the_masters_own_socket(tmp_path):
    # Without XDG_RUNTIME_DIR, Gunicorn falls back to $HOME/.gunicorn/gunicorn.ctl of its own environment: here a
    # HOME that is not the passwd home of the user running it.
    home = tmp_path / 'home'
    home.mkdir()
    with running(tmp_path / 'a', workers=1, env={'XDG_RUNTIME_DIR': '', 'HOME': str(home)}) as server:
        expected = str(home / '.gunicorn' / locate.SOCKET_NAME)
        eventually(expected, lambda c: show(c, 'stats'), lambda s: s.pid == server.master_pid, 'the home socket')
        verified = found(server)
        with verified.client:
            assert verified.candidate.path == expected and verified.stats.pid == server.master_pid
            assert verified.candidate.source == "the master's own listening socket"
        # The parent directory Gunicorn creates is private to its user.
        assert oct(Path(expected).parent.stat().st_mode & 0o777) == oct(0o700)
        assert oct(Path(expected).stat().st_mode & 0o777) == oct(0o600)


def test_explicit_path_from_an_untitled_command_line(tmp_path):
    explicit = str(tmp_path / 'app.ctl')
    with running(tmp_path, workers=1, setproctitle=False, args=['--control-socket', explicit]) as server:
        eventually(explicit, lambda c: show(c, 'stats'), lambda s: s.pid == server.master_pid, 'the explicit socket')
        stat = PROCFS.read_stat(server.master_pid)
        paths = locate.candidates(PROCFS, stat, os.getuid())
        assert explicit in [c.path for c in paths]
        verified = found(server)
        with verified.client:
            assert verified.candidate.path == explicit
        assert not os.path.exists(str(server.default_control_socket))


@pytest.mark.skipif(os.geteuid() != 0, reason='dropping to another user needs root')
def test_the_permission_fix_on_a_real_master(tmp_path):
    # The Agent's user (nobody here) is denied the default 0600 socket, and gets in with the fix the error message
    # gives: mode 0o660 and a setgid directory of a group it belongs to, which survives Gunicorn re-creating the
    # socket on every fork. Not under tmp_path: pytest makes its base directory 0700.
    shared = Path(tempfile.mkdtemp(prefix='ctl-fix-'))
    try:
        os.chown(shared, 0, 65534)
        os.chmod(shared, 0o2750)
        path = str(shared / locate.SOCKET_NAME)
        with running(tmp_path / 'private', workers=1, args=['--control-socket', path]) as server:
            eventually(path, lambda c: show(c, 'stats'), lambda s: s.pid == server.master_pid, 'the socket')
            kind, message = query_as_nobody(path)
            assert kind == 'SocketPermissionDenied' and 'mode 0600' in message and 'setgid' in message
        with running(tmp_path / 'fixed', workers=1, args=['--control-socket', path, '--control-socket-mode', '0o660']):
            wait_for(lambda: os.path.exists(path), 20, 'the socket')
            assert os.stat(path).st_gid == 65534
            assert query_as_nobody(path) == ('ok', '')
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_another_masters_socket_is_rejected(tmp_path):
    with running(tmp_path / 'a', workers=1) as first, running(tmp_path / 'b', workers=1) as second:
        path = str(first.default_control_socket)
        eventually(path, lambda c: show(c, 'stats'), lambda s: s.pid == first.master_pid, 'the first socket')
        with pytest.raises(locate.Unverified) as info:
            found(second, configured=path)
        error = info.value.telling
        assert isinstance(error, locate.WrongMaster)
        assert (error.expected_pid, error.answering_pid, error.app) == (second.master_pid, first.master_pid, first.name)
        verified = found(first, configured=path)
        with verified.client:
            assert verified.stats.pid == first.master_pid


def test_a_stopped_master_times_out_within_the_deadline(tmp_path):
    with running(tmp_path, workers=1) as server:
        path = str(server.default_control_socket)
        eventually(path, lambda c: show(c, 'stats'), lambda s: s.pid == server.master_pid, 'the socket')
        server.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: psutil.Process(server.master_pid).status() == psutil.STATUS_STOPPED, 10, 'SIGSTOP')
            client = ControlSocketClient(path, 0.3)
            with pytest.raises(SocketTimeout, match='raise the timeout'):
                show(client, 'stats')
            assert client.deadline.remaining() > -1.0
        finally:
            server.signal(signal.SIGCONT)
        assert ask(path, lambda c: show(c, 'stats')).pid == server.master_pid


def test_gunicorn_23_has_no_control_socket(tmp_path):
    with running(tmp_path, version='23.0.0', workers=1) as server:
        stat = PROCFS.read_stat(server.master_pid)
        paths = locate.candidates(PROCFS, stat, PROCFS.read_status(stat.pid).uid)
        if os.geteuid() == 0:
            # Its fds show it holds no listening unix socket: no path is its socket, none is tried.
            assert paths == []
            return
        with pytest.raises((locate.Unverified, SocketMissing)) as info:
            found(server)
        assert not getattr(info.value, 'tied', False)
