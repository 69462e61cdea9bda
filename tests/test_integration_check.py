"""The check against real Gunicorn masters started from their own virtualenvs, one version after another."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.dev.utils import get_metadata_metrics, get_service_checks
from datadog_checks.gunicorn.sources import version as version_module

from .common import as_nobody, cpu_ns, instance_for, run_once, wait_for
from .gunicorn_env import GUNICORN_VERSIONS, NEWEST

pytestmark = [pytest.mark.integration, pytest.mark.every_agent]

ALL_VERSIONS = pytest.mark.parametrize('version', GUNICORN_VERSIONS)


@ALL_VERSIONS
def test_idle_workers_are_exactly_idle(version, gunicorn, make_check, aggregator, dd_run_check, datadog_agent):
    server = gunicorn(version=version, workers=3)
    check = make_check(instance_for(server))
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 3}
    tags = ['team:web', 'app:%s' % server.name]
    aggregator.assert_metric('gunicorn.workers', 3, tags=[*tags, 'state:idle'], count=1)
    aggregator.assert_metric('gunicorn.workers', 0, tags=[*tags, 'state:working'], count=1)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=tags, count=1)
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)
    aggregator.assert_service_checks(get_service_checks())
    major, minor, patch = version.split('.')
    datadog_agent.assert_metadata(
        'gunicorn:test',
        {
            'version.scheme': 'semver',
            'version.major': major,
            'version.minor': minor,
            'version.patch': patch,
            'version.raw': version,
        },
    )


@ALL_VERSIONS
def test_a_worker_burning_cpu_is_working(version, gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(version=version, workers=3)
    before = {pid: cpu_ns(pid) for pid in server.worker_pids()}
    request = server.hold('/burn/4')
    wait_for(lambda: any(cpu_ns(p) - before[p] > 50_000_000 for p in before), 10, 'a worker to burn CPU')
    assert run_once(dd_run_check, aggregator, make_check(instance_for(server))) == {'working': 1, 'idle': 2}
    request.join(10)


@ALL_VERSIONS
def test_ttin_and_ttou_change_the_counts(version, gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(version=version, workers=2)
    check = make_check(instance_for(server))
    assert sum(run_once(dd_run_check, aggregator, check).values()) == 2
    server.signal(signal.SIGTTIN)
    server.wait_ready(workers=3)
    assert sum(run_once(dd_run_check, aggregator, check).values()) == 3
    # One signal at a time: Gunicorn may drop a signal that arrives while it handles the previous one.
    server.signal(signal.SIGTTOU)
    server.wait_ready(workers=2)
    assert sum(run_once(dd_run_check, aggregator, check).values()) == 2
    assert check._discovery.scans == 1  # the master was remembered, not searched for on every run


def test_killing_the_master_turns_the_service_check_critical(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2)
    check = make_check(instance_for(server))
    run_once(dd_run_check, aggregator, check)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    server.signal(signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(server.master_pid) or psutil.Process(server.master_pid).status() == 'zombie')
    assert run_once(dd_run_check, aggregator, check) == {}  # no worker gauges without a master, as before
    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        tags=['team:web', 'app:%s' % server.name],
        message=r'.*No gunicorn process with name %s found.*setproctitle.*' % server.name,
    )


def test_no_master_at_all(make_check, aggregator, dd_run_check):
    check = make_check({'proc_name': 'nothing-runs-with-this-name', 'tags': ['team:web']})
    assert run_once(dd_run_check, aggregator, check) == {}
    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        tags=['team:web', 'app:nothing-runs-with-this-name'],
        message=r'.*`gunicorn: master \[nothing-runs-with-this-name\]`.*pip install setproctitle.*',
    )
    assert any('setproctitle' in w for w in check.warnings)


def test_a_master_without_workers_is_critical(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=1)
    check = make_check(instance_for(server))
    worker = server.worker_pids()[0]
    # SIGSTOP keeps the master from respawning for a moment: the window where it has no worker.
    server.signal(signal.SIGSTOP)
    try:
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not server.worker_pids(), 10, 'the worker to be gone')
        assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 0}
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.CRITICAL, message=r'.*has no workers.*')
    finally:
        server.signal(signal.SIGCONT)
    server.wait_ready(workers=1)
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 1}


@ALL_VERSIONS
def test_usr2_upgrade_at_each_stage(version, gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(version=version, workers=2)
    check = make_check(instance_for(server))
    old = server.master_pid
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}

    # Stage 1: the new master `[name.2]` runs under the old one with its own workers; both sets serve traffic.
    server.signal(signal.SIGUSR2)
    new = wait_for(lambda: server.titled('gunicorn: master [%s.2]' % server.name), 20, 'the new master')[0]
    wait_for(lambda: len(server.worker_pids(new)) == 2, 20, 'the new master to boot its workers')
    server.wait_quiet()
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 4}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)

    # Stage 2: the old master is stopped (WINCH, which would stop only its workers, works for daemons only); the new
    # master is re-parented and, moments later, promoted: renamed back to `[name]`.
    server.signal(signal.SIGTERM, old)
    wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == 'zombie', 20, 'the old master')
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK)
    wait_for(lambda: server.titled('gunicorn: master [%s]' % server.name) == [new], 20, 'the promotion')
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}


def test_the_dirty_arbiter_and_dirty_workers_are_not_http_workers(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(version=NEWEST, workers=2, args=['--dirty-app', 'dirty:Tasks', '--dirty-workers', '2'])
    wait_for(lambda: len(server.titled('gunicorn: dirty-worker [')) == 2, 20, 'two dirty workers')
    master_children = psutil.Process(server.master_pid).children()
    assert len(master_children) == 3  # two workers and the dirty arbiter: what a naive check would count
    assert run_once(dd_run_check, aggregator, make_check(instance_for(server))) == {'working': 0, 'idle': 2}


def test_two_masters_with_one_name_are_summed(gunicorn, make_check, aggregator, dd_run_check):
    first = gunicorn(workers=2)
    gunicorn(workers=3, name=first.name)
    assert run_once(dd_run_check, aggregator, make_check(instance_for(first))) == {'working': 0, 'idle': 5}


@pytest.mark.parametrize('name', ['my app: v2/[blue]', 'proj.wsgi:application'])
def test_names_with_spaces_colons_slashes_brackets(name, gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, name=name)
    assert run_once(dd_run_check, aggregator, make_check(instance_for(server))) == {'working': 0, 'idle': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['team:web', 'app:%s' % name])


def test_without_a_name_the_app_module_is_the_name(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2, name=None)
    assert run_once(dd_run_check, aggregator, make_check({'proc_name': 'app:app'})) == {'working': 0, 'idle': 2}
    assert server.titled('gunicorn: master [app:app]')


def test_a_worker_killed_during_the_sample_window(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=3)
    check = make_check(instance_for(server))
    dd_run_check(check)
    victim = server.worker_pids()[0]

    def sleep_and_kill(seconds):
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not os.path.exists('/proc/%d' % victim), 10, 'the worker to die and be reaped')

    check._sampler.sleep = sleep_and_kill
    gauges = run_once(dd_run_check, aggregator, check)
    assert gauges == {'working': 0, 'idle': 2}  # seen at one end of the window only: counted neither way


def test_version_command_runs_once_per_master(gunicorn, make_check, aggregator, dd_run_check, monkeypatch):
    calls = []
    real = version_module.subprocess.run
    monkeypatch.setattr(version_module.subprocess, 'run', lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    server = gunicorn(workers=1)
    check = make_check(instance_for(server))
    for _ in range(3):
        dd_run_check(check)
    assert len(calls) == 1
    assert calls[0] == [str(server.venv / 'bin' / 'gunicorn'), '--version']
    server.stop()
    restarted = gunicorn(workers=1, name=server.name)
    wait_for(lambda: restarted.worker_pids(), 10, 'the restarted worker')
    dd_run_check(check)
    assert len(calls) == 2


def test_a_missing_version_command_is_not_an_error(gunicorn, make_check, aggregator, dd_run_check, datadog_agent):
    server = gunicorn(workers=1)
    check = make_check({'proc_name': server.name, 'gunicorn': '/nonexistent/gunicorn'})
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 1}
    datadog_agent.assert_metadata_count(0)


def test_init_config_gunicorn_is_used_when_the_instance_has_none(gunicorn, make_check, dd_run_check, datadog_agent):
    server = gunicorn(workers=1)
    check = make_check({'proc_name': server.name}, {'gunicorn': str(server.venv / 'bin' / 'gunicorn')})
    dd_run_check(check)
    datadog_agent.assert_metadata('gunicorn:test', {'version.raw': server.version})


@pytest.mark.parametrize('titled', [True, False], ids=['titled', 'untitled'])
@ALL_VERSIONS
def test_the_version_comes_from_the_masters_installation_without_a_subprocess(
    version, titled, gunicorn, make_check, aggregator, dd_run_check, datadog_agent, monkeypatch
):
    if os.geteuid() != 0 and titled:
        pytest.skip("a titled master's installation is found from /proc/PID/maps: ptrace-level access")
    server = gunicorn(version=version, workers=1, setproctitle=titled)
    # No `gunicorn` option, and no command may run: the version is read from the master's own dist-info.
    monkeypatch.setattr(version_module.subprocess, 'run', lambda *a, **k: pytest.fail('ran %s' % (a,)))
    check = make_check({'proc_name': server.name})
    run_once(dd_run_check, aggregator, check)
    assert not [w for w in check.get_warnings() if 'version' in w]
    datadog_agent.assert_metadata('gunicorn:test', {'version.raw': version})


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to become nobody')
def test_a_version_that_cannot_be_found_is_one_warning_per_master(gunicorn):
    server = gunicorn(workers=1)  # titled: without ptrace-level access its installation is not visible

    def runs() -> list[list[str]]:
        import os as os_module

        from datadog_checks.gunicorn import GunicornCheck

        os_module.environ['PATH'] = '/nonexistent'  # and no gunicorn on the Agent's PATH
        check = GunicornCheck('gunicorn', {}, [{'proc_name': server.name}])
        said = []
        for _ in range(2):
            check.run()
            said.append([w for w in check.get_warnings() if 'version' in w])
        return said

    first, second = as_nobody(runs)
    assert second == [] and len(first) == 1, (first, second)
    assert first[0].startswith('No Gunicorn version metadata for master %d: ' % server.master_pid), first
    assert 'Set the `gunicorn` option' in first[0] and 'ptrace-level access' in first[0], first
