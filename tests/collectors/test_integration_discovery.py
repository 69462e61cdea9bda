"""Finding real Gunicorn masters without titles, by pid file, during `--preload`, and through a USR2 upgrade."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from datadog_checks.base import AgentCheck

from ..common import run_once, wait_for
from ..gunicorn_env import NEWEST

pytestmark = pytest.mark.integration

TITLES = pytest.mark.parametrize('setproctitle', [True, False], ids=['titles', 'no-titles'])


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def children(pid: int) -> list[int]:
    try:
        return sorted(c.pid for c in psutil.Process(pid).children())
    except psutil.Error:
        return []


def warnings_over_runs(check, dd_run_check, aggregator, runs: int) -> list[str]:
    seen = []
    for _ in range(runs):
        aggregator.reset()
        dd_run_check(check)
        seen += check.warnings
        check.warnings.clear()
    return seen


@pytest.fixture
def sleeper(tmp_path):
    """A process of the test's own that is not Gunicorn, with secrets on its command line; always stopped."""
    started = []

    def start(*args: str, name: str = 'worker.py') -> subprocess.Popen:
        script = tmp_path / name
        script.write_text('import time\ntime.sleep(120)\n')
        proc = subprocess.Popen([sys.executable, str(script), *args])
        started.append(proc)
        wait_for(lambda: len(psutil.Process(proc.pid).cmdline()) > 1, 10, 'the sleeper to exec')
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(10)


# Without setproctitle


@pytest.mark.parametrize('version', ['20.1.0', NEWEST])
def test_without_setproctitle_found_by_name(version, gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(version=version, workers=3, setproctitle=False)
    assert not server.titled('gunicorn:')  # really no titles: every process shows its command line
    check = make_check({'proc_name': server.name, 'tags': ['team:web']})
    warnings = warnings_over_runs(check, dd_run_check, aggregator, 3)
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 3}
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.OK, tags=['team:web', 'app:%s' % server.name], count=1
    )
    assert len(warnings) == 1, warnings
    assert 'runs without process titles' in warnings[0] and 'setproctitle' in warnings[0]
    assert check._discovery.scans == 1  # found once, then verified by pid and start time


def test_without_setproctitle_and_without_a_name_the_app_module_matches(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, setproctitle=False, name=None, app='slow:app')  # nobody else runs `slow:app`
    check = make_check({'proc_name': 'slow:app'})
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    assert server.master_pid == check._discovery.trees()[0].master.pid


def test_without_setproctitle_a_busy_worker_is_working(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, setproctitle=False)
    request = server.hold('/burn/3')
    wait_for(lambda: any(psutil.Process(p).cpu_times().user > 0.2 for p in server.worker_pids()), 10, 'a busy worker')
    assert run_once(dd_run_check, aggregator, make_check({'proc_name': server.name})) == {'working': 1, 'idle': 1}
    request.join(10)


def test_two_instances_each_warn_once(gunicorn, make_check, aggregator, dd_run_check):
    first = gunicorn(workers=1, setproctitle=False)
    second = gunicorn(workers=2, setproctitle=False)
    for server in (first, second):
        check = make_check({'proc_name': server.name})
        assert len(warnings_over_runs(check, dd_run_check, aggregator, 2)) == 1
        assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': server.workers}


# Pid files


@TITLES
def test_found_by_pid_file(setproctitle, gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    pid_file = tmp_path / 'app.pid'
    server = gunicorn(workers=3, setproctitle=setproctitle, args=['--pid', str(pid_file)])
    check = make_check({'pid_file': str(pid_file), 'tags': ['team:web']})
    warnings = warnings_over_runs(check, dd_run_check, aggregator, 3)
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 3}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['team:web', 'app:%s' % server.name])
    assert len(warnings) == (0 if setproctitle else 1), warnings
    assert check._discovery.scans == 0  # the pid file is enough: no walk of the process table


def test_a_stale_pid_file_after_the_master_was_killed(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    pid_file = tmp_path / 'app.pid'
    server = gunicorn(workers=1, args=['--pid', str(pid_file)])
    check = make_check({'pid_file': str(pid_file)})
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 1}
    master = server.master_pid
    server.signal(signal.SIGKILL)
    wait_for(lambda: gone(master), 10, 'the master to die')
    assert pid_file.read_text().strip() == str(master)  # a killed master cannot remove its file
    assert run_once(dd_run_check, aggregator, check) == {}
    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        tags=['app:%s' % server.name],
        message=r'pid file .*app\.pid is stale: pid %d is not running' % master,
    )


def test_a_reused_pid(tmp_path, sleeper, make_check, aggregator, dd_run_check):
    # A file written before the process now holding its pid was started: that process cannot have written it.
    proc = sleeper('--password=hunter2', 'postgres://app:secret@db/app')
    pid_file = tmp_path / 'app.pid'
    pid_file.write_text('%d\n' % proc.pid)
    an_hour_ago = time.time() - 3600
    os.utime(pid_file, (an_hour_ago, an_hour_ago))
    check = make_check({'pid_file': str(pid_file)})
    assert run_once(dd_run_check, aggregator, check) == {}
    (sc,) = aggregator.service_checks('gunicorn.is_running')
    assert sc.status == AgentCheck.CRITICAL
    assert 'is stale: pid %d was reused by `%s' % (proc.pid, sys.executable) in sc.message
    assert 'started after the file was written' in sc.message
    assert 'hunter2' not in sc.message and 'secret' not in sc.message


def test_a_pid_file_naming_a_program_that_is_not_gunicorn(tmp_path, sleeper, make_check, aggregator, dd_run_check):
    proc = sleeper('--api-key', 'abc123')
    pid_file = tmp_path / 'app.pid'
    pid_file.write_text('%d\n' % proc.pid)  # written after the process started: not a reuse, a wrong file
    check = make_check({'pid_file': str(pid_file)})
    assert run_once(dd_run_check, aggregator, check) == {}
    (sc,) = aggregator.service_checks('gunicorn.is_running')
    assert sc.status == AgentCheck.CRITICAL
    assert 'names pid %d, which is not Gunicorn but `%s' % (proc.pid, sys.executable) in sc.message
    assert 'abc123' not in sc.message


def test_a_pid_file_naming_a_worker(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=1, setproctitle=False)
    pid_file = tmp_path / 'app.pid'
    pid_file.write_text('%d\n' % server.worker_pids()[0])
    assert run_once(dd_run_check, aggregator, make_check({'pid_file': str(pid_file)})) == {}
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.CRITICAL, message=r'a Gunicorn worker of master %d' % server.master_pid
    )


def test_a_missing_pid_file_with_a_name_falls_back(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2)
    check = make_check({'proc_name': server.name, 'pid_file': str(tmp_path / 'absent.pid')})
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    assert any('does not exist' in w and 'found by proc_name' in w for w in check.warnings)


# The --preload window


def test_a_preloading_master_is_found_before_its_title_is_set(gunicorn, tmp_path, make_check, aggregator, dd_run_check):
    release = tmp_path / 'release'
    server = gunicorn(
        wait=False,
        workers=2,
        app='slow:app',
        args=['--preload'],
        env={'SLOW_IMPORT_SECONDS': '25', 'SLOW_IMPORT_RELEASE': str(release)},
    )
    wait_for(lambda: '--preload' in psutil.Process(server.master_pid).cmdline(), 10, 'the master to exec')
    check = make_check({'proc_name': server.name})
    assert not server.master_title_set() and children(server.master_pid) == []
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 0}
    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        message=r'master %d is still starting \(it shows its command line' % server.master_pid,
    )
    assert check.warnings == []  # setproctitle is installed: titles will come, nothing to warn about
    release.touch()
    server.wait_ready()
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    assert check._discovery.scans == 1  # the same master, recognised through its change of title


# USR2 upgrade with a pid file


@TITLES
def test_usr2_upgrade_with_a_pid_file_at_every_stage(
    setproctitle, gunicorn, tmp_path, make_check, aggregator, dd_run_check
):
    pid_file = tmp_path / 'app.pid'
    upgrade_file = tmp_path / 'app.pid.2'
    server = gunicorn(workers=2, setproctitle=setproctitle, args=['--pid', str(pid_file)])
    check = make_check({'pid_file': str(pid_file)})
    old = server.master_pid
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}

    # Stage 1: the new master runs under the old one, has written `app.pid.2` and booted its own workers.
    server.signal(signal.SIGUSR2)
    wait_for(lambda: upgrade_file.exists(), 20, 'the new master to write its pid file')
    new = int(upgrade_file.read_text())
    wait_for(lambda: len(children(new)) == 2, 20, 'the new master to boot its workers')
    server.wait_quiet()
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 4}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:%s' % server.name])

    # Stage 2: the old master stops and removes its file; until the new one is promoted only `app.pid.2` exists.
    # The new master promotes itself within a second of noticing its new parent: stopped, it holds this stage.
    server.signal(signal.SIGSTOP, new)
    try:
        server.signal(signal.SIGTERM, old)
        wait_for(lambda: gone(old), 20, 'the old master to exit')
        wait_for(lambda: not pid_file.exists(), 10, 'the old master to remove its pid file')
        assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
        # Titled `master [NAME.2]` until promoted: still the application NAME.
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:%s' % server.name])
    finally:
        server.signal(signal.SIGCONT, new)

    # Promotion: `app.pid.2` is renamed to `app.pid`.
    wait_for(lambda: pid_file.exists() and not upgrade_file.exists(), 20, 'the promotion')
    assert int(pid_file.read_text()) == new
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:%s' % server.name])


def test_usr2_upgrade_without_titles_and_without_a_pid_file(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, setproctitle=False)
    check = make_check({'proc_name': server.name})
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    old_workers = children(server.master_pid)
    server.signal(signal.SIGUSR2)
    new = wait_for(lambda: [p for p in children(server.master_pid) if p not in old_workers], 20, 'the new master')[0]
    wait_for(lambda: len(children(new)) == 2, 20, 'the new master to boot its workers')
    server.wait_quiet()
    # Told apart by its comm: re-executed through sys.executable (`python`), where the first master shows `gunicorn`.
    assert psutil.Process(new).name() != psutil.Process(server.master_pid).name()
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 4}
    server.signal(signal.SIGTERM, server.master_pid)
    wait_for(lambda: gone(server.master_pid), 20, 'the old master to exit')
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
