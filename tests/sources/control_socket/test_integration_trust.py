"""Whom the check trusts on a control socket, and what it lets out, on real Gunicorn 27.0.1 masters.

Each case asserts what the check sends (the control-socket figures present or absent, its warnings, the service
check) and what `diagnose` says about the same master: a socket planted by another user, two applications on one
default path, a HOME that is not the passwd home, a USR2 upgrade on a configured path, several masters under one
name, a secret in a factory call, and a name longer than any message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn.cli.diagnose import diagnose, render
from datadog_checks.gunicorn.messages import MESSAGE_CHARS
from datadog_checks.gunicorn.sources.control_socket.client import ControlSocketClient, ControlSocketError
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ...common import (
    CONTROL_SOCKET_METRICS,
    NOBODY,
    as_nobody,
    control_figures,
    instance_for,
    run_as_nobody,
    run_once,
    wait_for,
)
from ...gunicorn_env import APPS, REPO, Gunicorn, running

pytestmark = pytest.mark.integration

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason='needs root to act as another user')


# Helpers


def stats_pid(path: str) -> int | None:
    """The pid `show stats` names at `path` (read without any check of who answers), None when nothing answers."""
    try:
        with ControlSocketClient(path, 2.0) as client:
            return client.query('show stats').get('pid')
    except ControlSocketError:
        return None


def diagnosis(proc_name: str, control_socket: str | None = None) -> str:
    return render(diagnose(ProcFS('/proc'), proc_name, control_socket=control_socket))


def master_section(out: str, pid: int) -> str:
    """The lines diagnose prints about master `pid`."""
    assert '(pid %d)' % pid in out, out
    return out.split('(pid %d)' % pid, 1)[1].split('\n  - ', 1)[0].split('\n\n', 1)[0]


def control_socket_line(out: str, pid: int) -> str:
    (line,) = [x for x in master_section(out, pid).splitlines() if x.strip().startswith('control socket:')]
    return line.strip()


def run(dd_run_check, aggregator, check) -> tuple[dict[str, float], dict[str, list[float]], list[str]]:
    """One run as the Agent makes it: the worker gauges, the control-socket figures, and the warnings it showed."""
    gauges = run_once(dd_run_check, aggregator, check)
    return gauges, control_figures(aggregator), check.get_warnings()


def sent(figures: dict[str, list[float]]) -> list[str]:
    return [name for name, values in figures.items() if values]


@contextlib.contextmanager
def reachable_dir(mode: int = 0o1777) -> Iterator[str]:
    """A directory outside pytest's private tree (0700), so that another user can reach into it."""
    path = tempfile.mkdtemp(prefix='trust-')
    os.chmod(path, mode)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Planted:
    """tests/apps/planted_socket.py running as `nobody`: a socket at `path` that answers as master `pid` would."""

    def __init__(self, path: str, pid: int):
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, '-I', '-S', str(APPS / 'planted_socket.py'), path, str(pid), str(NOBODY)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = self.proc.stdout.readline().decode()

    def heard(self) -> list[str]:
        """Stop it and return what it printed after it started listening."""
        self.stop()
        with self.proc.stdout:
            return self.proc.stdout.read().decode().splitlines()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def diagnose_as_nobody(proc_name: str, control_socket: str | None = None, passwd_home: str | None = None) -> str:
    """diagnose's text as `nobody` sees it, from a forked child that dropped root; `passwd_home` replaces root's home
    in the child's view of the passwd database."""

    def look() -> str:
        if passwd_home is not None:
            real = pwd.getpwuid
            root = real(0)
            entry = pwd.struct_passwd((*root[:5], passwd_home, *root[6:]))
            pwd.getpwuid = lambda uid: entry if uid == 0 else real(uid)
        return diagnosis(proc_name, control_socket)

    return as_nobody(look)


# 1. A socket another user planted


@ROOT_ONLY
def test_a_socket_planted_by_another_user_is_refused_before_connecting(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2)
    with reachable_dir() as shared:  # sticky and world-writable, as /tmp: any user may bind a socket there
        path = os.path.join(shared, 'app.ctl')
        planted = Planted(path, server.master_pid)
        try:
            assert planted.started.startswith('listening as uid %d' % NOBODY), planted.started
            # It would pass for the master if it were asked: it answers `show stats` with the master's pid.
            assert stats_pid(path) == server.master_pid
            check = make_check(instance_for(server, control_socket=path))
            for _ in range(2):
                gauges, figures, warnings = run(dd_run_check, aggregator, check)
                assert gauges == {'working': 0, 'idle': 2}
                aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, count=1)
                assert sent(figures) == []
                (warning,) = warnings
                assert 'no control-socket metrics for master %d' % server.master_pid in warning
                assert path in warning and 'belongs to uid %d' % NOBODY in warning and 'not trusted' in warning
                assert 'start each application with its own --control-socket' in warning
            line = control_socket_line(diagnosis(server.name, control_socket=path), server.master_pid)
            assert line.startswith('control socket: not trusted: ') and path in line, line
            assert line.endswith("belongs to uid %d, not to the master's user" % NOBODY), line
            assert stats_pid(path) == server.master_pid
        finally:
            heard = planted.heard()
    # Only the test's own two queries reached it: the check and diagnose refused on the file's owner, before connect().
    assert heard == ['accepted', 'request show stats'] * 2, heard


# 2. Two applications on one default path


def test_two_apps_sharing_one_default_path(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    shared = tmp_path / 'runtime'
    shared.mkdir(mode=0o700)
    env = {'XDG_RUNTIME_DIR': str(shared)}  # one user's session: both default to $XDG_RUNTIME_DIR/gunicorn.ctl
    first = gunicorn(workers=2, env=env)
    second = gunicorn(workers=3, env=env)
    path = str(shared / 'gunicorn.ctl')
    # Gunicorn 27.0.1 binds the path again after every fork, so the last master to fork holds it: the second, which
    # started its control server after its workers. Nothing forks from now on.
    wait_for(lambda: stats_pid(path) == second.master_pid, 20, 'the second master to hold %s' % path)

    check = make_check(instance_for(first))
    for _ in range(2):  # the second run would be the first with churn counts
        gauges, figures, warnings = run(dd_run_check, aggregator, check)
        assert gauges == {'working': 0, 'idle': 2}
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, count=1)
        assert sent(figures) == []
        (warning,) = warnings
        assert 'no control-socket metrics for master %d (%s)' % (first.master_pid, first.name) in warning
        assert 'is answered by pid %d of app %s' % (second.master_pid, second.name) in warning
        assert 'start each application with its own --control-socket' in warning

    other = make_check(instance_for(second))
    for spawned in ([], [0]):
        gauges, figures, warnings = run(dd_run_check, aggregator, other)
        assert gauges == {'working': 0, 'idle': 3} and warnings == []
        assert figures['gunicorn.workers.target'] == [3] and figures['gunicorn.workers.spawned'] == spawned

    out = diagnosis(first.name)
    line = control_socket_line(out, first.master_pid)
    assert line.startswith('control socket: held by another master: ') and path in line, line
    assert line.endswith('is answered by pid %d (app %s)' % (second.master_pid, second.name)), line
    assert control_socket_line(diagnosis(second.name), second.master_pid).endswith('answered by this master')


# 3. A HOME that is not the passwd home


@pytest.fixture(scope='module')
def elsewhere_home(tmp_path_factory) -> Iterator[tuple[Gunicorn, str]]:
    """A master whose HOME is not its passwd home (root's is /root), in a directory `nobody` may traverse, and the
    socket Gunicorn 27.0.1 makes of that HOME without XDG_RUNTIME_DIR."""
    with reachable_dir(mode=0o755) as base:
        home = os.path.join(base, 'home')
        os.mkdir(home)
        env = {'XDG_RUNTIME_DIR': '', 'HOME': home}
        with running(tmp_path_factory.mktemp('elsewhere'), workers=2, env=env) as server:
            expected = os.path.join(home, '.gunicorn', 'gunicorn.ctl')
            wait_for(lambda: stats_pid(expected) == server.master_pid, 20, 'the master to answer at %s' % expected)
            # The directory Gunicorn made is private to the master's user: `nobody` cannot even see the file.
            assert oct(os.stat(os.path.dirname(expected)).st_mode & 0o777) == oct(0o700)
            yield server, expected


def test_a_home_other_than_the_passwd_home_is_found_from_the_masters_socket(
    elsewhere_home, make_check, aggregator, dd_run_check
):
    server, expected = elsewhere_home
    check = make_check(instance_for(server))
    gauges, figures, warnings = run(dd_run_check, aggregator, check)
    assert gauges == {'working': 0, 'idle': 2} and warnings == []
    assert figures['gunicorn.workers.target'] == [2]
    (located,) = check._control._located.values()
    assert (located.candidates[0].path, located.candidates[0].source) == (expected, "the master's own listening socket")
    line = control_socket_line(diagnosis(server.name), server.master_pid)
    assert line.startswith('control socket: ') and expected in line, line
    assert line.endswith("(found from the master's own listening socket), answered by this master"), line


@ROOT_ONLY
def test_without_privileges_the_check_skips_the_socket_quietly(elsewhere_home):
    server, expected = elsewhere_home
    # As `nobody`: no fd to tie the socket to the master, and Gunicorn's 0700 directory in the way. The workers still
    # come from the process table; a socket found (not configured) that this user may not open costs only the
    # optional figures, said in the debug log, not in a warning.
    seen = run_as_nobody(instance_for(server))
    assert seen['errors'] == ['', ''], seen['errors']
    assert [v for v, _ in seen['metrics']['gunicorn.workers']] == [0, 2, 0, 2]
    assert not set(seen['metrics']) & set(CONTROL_SOCKET_METRICS), sorted(seen['metrics'])
    skipped = 'No control-socket metrics for master %d' % server.master_pid
    assert any(m.startswith(skipped) for m in seen['debug']), seen['debug']


@ROOT_ONLY
@pytest.mark.parametrize('passwd_home', ['/root (0700)', 'a traversable home'])
def test_without_privileges_diagnose_says_the_masters_socket_is_refused_not_absent(passwd_home, elsewhere_home):
    server, expected = elsewhere_home
    with contextlib.ExitStack() as stack:
        home = None
        if passwd_home == 'a traversable home':  # what a service user's home usually is: root's passwd entry says so
            home = stack.enter_context(reachable_dir(mode=0o755))
        line = control_socket_line(diagnose_as_nobody(server.name, passwd_home=home), server.master_pid)
    # Without the master's fds nothing ties a listener to it: other Gunicorns of this machine may listen on their own
    # default paths in the same namespace, so diagnose lists what listens there and claims none as the master's.
    assert line.startswith('control socket: not tied to this master: sockets listen in its network namespace at '), line
    assert '%s (refused to this user by permission)' % expected in line, line
    assert 'held by another master' not in line and 'Set control_socket to its path' in line, line


# 4. A USR2 upgrade on a configured socket


@pytest.mark.parametrize(
    'socket_name',
    [
        'gunicorn.ctl',
        'app.ctl',
    ],
)
def test_a_usr2_upgrade_on_a_configured_socket(socket_name, gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    path = str(tmp_path / socket_name)
    server = gunicorn(workers=2, args=['--control-socket', path])
    old = server.master_pid
    wait_for(lambda: stats_pid(path) == old, 20, 'the master to answer at %s' % path)
    check = make_check(instance_for(server, control_socket=path))
    gauges, figures, warnings = run(dd_run_check, aggregator, check)
    assert figures['gunicorn.workers.target'] == [2] and warnings == []

    # The new master `[name.2]` runs the same command line, so it binds the same path, after its own workers.
    server.signal(signal.SIGUSR2)
    new = wait_for(lambda: server.titled('gunicorn: master [%s.2]' % server.name), 20, 'the new master')[0]
    wait_for(lambda: len(server.worker_pids(new)) == 2, 20, 'the new master to boot its workers')
    wait_for(lambda: stats_pid(path) == new, 20, 'the new master to hold %s' % path)
    server.wait_quiet()
    gauges, figures, warnings = run(dd_run_check, aggregator, check)
    assert gauges == {'working': 0, 'idle': 4}
    assert figures['gunicorn.workers.target'] == [2] and warnings == []  # the upgrade's new master answered for it
    line = control_socket_line(diagnosis(server.name, control_socket=path), old)
    assert line.endswith('answered by the new master %d of a USR2 upgrade' % new), line

    # The old master exits; on its way out Gunicorn 27.0.1 deletes the socket file the new master still listens on.
    server.signal(signal.SIGTERM, old)
    wait_for(lambda: server.proc.poll() is not None, 20, 'the old master to exit')
    wait_for(lambda: not os.path.exists(path), 20, 'the old master to delete %s' % path)
    gauges, figures, warnings = run(dd_run_check, aggregator, check)
    assert gauges == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, count=1)
    assert sent(figures) == []
    (warning,) = warnings
    assert 'no control-socket metrics for master %d' % new in warning
    assert 'the socket file' in warning and path in warning, warning
    assert 'is gone while the master still listens on it' in warning and 'USR2' in warning, warning
    assert 'next worker fork' in warning, warning
    assert not any(words in warning for words in ('older than 25.1', 'before 25.1', 'several instances share'))
    line = control_socket_line(diagnosis(server.name, control_socket=path), new)
    assert line.startswith('control socket: file gone at ') and path in line, line
    assert 'while the master still listens' in line, line

    # A fork makes the master bind its path again: one more worker brings the figures back.
    server.signal(signal.SIGTTIN, new)
    wait_for(lambda: len(server.worker_pids(new)) == 3, 20, 'the third worker')
    wait_for(lambda: stats_pid(path) == new, 20, 'the socket file to come back')
    server.wait_quiet()
    gauges, figures, warnings = run(dd_run_check, aggregator, check)
    assert gauges == {'working': 0, 'idle': 3} and warnings == []
    assert figures['gunicorn.workers.target'] == [3]


# 5. Several masters under one name, one configured socket


def test_several_masters_of_one_app_and_one_configured_socket(gunicorn, make_check, aggregator, dd_run_check):
    first = gunicorn(workers=2)
    second = gunicorn(workers=3, name=first.name)
    path = str(first.default_control_socket)
    wait_for(lambda: stats_pid(path) == first.master_pid, 20, 'the first master to answer at %s' % path)
    check = make_check(instance_for(first, control_socket=path))
    for _ in range(2):
        gauges, figures, warnings = run(dd_run_check, aggregator, check)
        assert gauges == {'working': 0, 'idle': 5}  # both masters' workers, from the process table
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, count=1)
        # One master of two answered: a sum over half the masters is no target, and no churn either.
        for name in ('gunicorn.workers.target', 'gunicorn.workers.spawned', 'gunicorn.workers.killed'):
            assert figures[name] == [], (name, figures)
        assert figures['gunicorn.worker.heartbeat_age.max']  # over the workers whose master did answer
        (warning,) = warnings
        assert 'no control-socket metrics for master %d (%s)' % (second.master_pid, first.name) in warning
        assert 'is answered by master %d of the same app' % first.master_pid in warning
        assert 'remove the option and start each master with its own --control-socket' in warning
    out = diagnosis(first.name, control_socket=path)
    assert control_socket_line(out, first.master_pid).endswith('answered by this master')
    line = control_socket_line(out, second.master_pid)
    assert line.startswith('control socket: held by another master: ') and path in line, line
    assert line.endswith('is answered by pid %d (app %s)' % (first.master_pid, first.name)), line


# 6. A secret in a factory call


SECRET = 'hunter2'


@pytest.mark.parametrize('titled', [False, True], ids=['untitled', 'titled'])
def test_a_factory_calls_arguments_never_leave_the_host(
    titled, gunicorn, make_check, aggregator, dd_run_check, datadog_agent, caplog
):
    # Untitled, the call is on every process's command line; titled, Gunicorn's default proc_name (the app URI) puts
    # it in the titles as well: `gunicorn: master [app:make_app(password="hunter2")]`.
    server = gunicorn(workers=2, name=None, setproctitle=titled, app='app:make_app(password="%s")' % SECRET)
    assert any(SECRET in arg for arg in psutil.Process(server.master_pid).cmdline())  # what the host hands over
    caplog.set_level(logging.DEBUG)
    check = make_check(instance_for(server, proc_name='app:make_app'))
    said = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: said.append(record.getMessage())
    check.log.logger.addHandler(handler)
    check.log.logger.setLevel(logging.DEBUG)
    told = []
    try:
        for _ in range(2):
            gauges, figures, warnings = run(dd_run_check, aggregator, check)
            assert gauges == {'working': 0, 'idle': 2}
            told += warnings
            aggregator.assert_service_check(
                'gunicorn.is_running', AgentCheck.OK, tags=['team:web', 'app:app:make_app'], count=1
            )
            assert all('app:app:make_app' in m.tags for m in aggregator.metrics('gunicorn.workers'))
            everything = repr([aggregator._metrics, aggregator._service_checks, aggregator._events])
            assert SECRET not in everything
        assert figures['gunicorn.workers.target'] == [2]  # its socket was found and read
    finally:
        check.log.logger.removeHandler(handler)
    if titled:
        assert told == []
    else:
        assert len(told) == 1 and 'app:make_app' in told[0], told  # titles are missing: said once, named
    assert SECRET not in repr(told)
    assert said and SECRET not in repr(said)
    assert SECRET not in caplog.text and not any(SECRET in r.getMessage() for r in caplog.records)
    assert SECRET not in repr(datadog_agent._metadata)

    done = subprocess.run(
        [sys.executable, '-m', 'datadog_checks.gunicorn', 'diagnose', '--proc-name', 'app:make_app'],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert 'proc_name app:make_app: found master %d.' % server.master_pid in done.stdout
    if not titled:
        assert 'app:make_app(...)' in master_section(done.stdout, server.master_pid)  # the command line, redacted
    assert '- proc_name: "app:make_app"\n' in done.stdout  # the suggested conf.yaml


# 7. A name longer than any message


def test_a_10000_character_proc_name_makes_bounded_messages(make_check, aggregator, dd_run_check):
    name = 'no-such-app-%s' % ('x' * 9988)
    assert len(name) == 10_000
    check = make_check({'proc_name': name})
    dd_run_check(check)
    (service_check,) = aggregator.service_checks('gunicorn.is_running')
    assert service_check.status == AgentCheck.CRITICAL
    assert 'No gunicorn process with name' in service_check.message
    assert len(service_check.message) <= MESSAGE_CHARS
    (warning,) = check.get_warnings()
    assert len(warning) <= MESSAGE_CHARS
    verdict = [line for line in diagnosis(name).splitlines() if 'No gunicorn process with name' in line]
    assert verdict and all(len(line) <= MESSAGE_CHARS for line in verdict), [len(line) for line in verdict]


# 8. A link planted at a guessed path


@ROOT_ONLY
def test_a_link_at_the_default_path_of_a_master_without_a_socket_is_never_connected_to(
    gunicorn, tmp_path, make_check, aggregator, dd_run_check
):
    # Gunicorn 23.0 has no control socket; whoever can write in its HOME plants ~/.gunicorn/gunicorn.ctl as a link to
    # another service's socket (here a listener of the test's own, which counts every connection).
    home = tmp_path / 'home'
    (home / '.gunicorn').mkdir(parents=True)
    service = tmp_path / 'service.sock'
    accepted = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(service))
        listener.listen(8)
        listener.settimeout(0.05)
        os.symlink(service, home / '.gunicorn' / 'gunicorn.ctl')
        server = gunicorn(version='23.0.0', workers=1, env={'HOME': str(home), 'XDG_RUNTIME_DIR': ''})
        check = make_check(instance_for(server))
        for _ in range(2):
            gauges, figures, warnings = run(dd_run_check, aggregator, check)
            assert gauges == {'working': 0, 'idle': 1} and sent(figures) == [] and warnings == [], warnings
        line = control_socket_line(diagnosis(server.name), server.master_pid)
        assert line == 'control socket: none: Gunicorn 23.0.0 has no control socket (it came with 25.1)', line
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])
    assert accepted == []
