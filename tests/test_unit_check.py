"""The check on fake proc trees: where it reads from, and what it reports for states a real host shows rarely."""

from __future__ import annotations

import os

import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn.sources import version

from .common import run_once
from .fakeproc import FakeProc


@pytest.fixture
def fake_root(tmp_path, datadog_agent, monkeypatch):
    fake = FakeProc(tmp_path / 'host-proc')
    # The stub keeps its configuration across tests: restore it, or every later check reads the fake root.
    monkeypatch.setitem(datadog_agent._config, 'procfs_path', str(fake.root))
    return fake


def test_reads_the_procfs_path_the_agent_is_configured_with(fake_root, make_check, aggregator, dd_run_check):
    fake_root.add(100, 1, 'gunicorn: master [web]', children=(101, 102))
    fake_root.add(101, 100, 'gunicorn: worker [web]')
    fake_root.add(102, 100, 'gunicorn: worker [web]')
    check = make_check({'proc_name': 'web', 'gunicorn': '/nonexistent'})
    assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}
    assert check._discovery.procfs.root == str(fake_root.root)


def test_a_worker_whose_cpu_time_moves_is_working(fake_root, make_check, aggregator, dd_run_check):
    fake_root.add(100, 1, 'gunicorn: master [web]', children=(101, 102))
    fake_root.add(101, 100, 'gunicorn: worker [web]', cpu_ns=10)
    fake_root.add(102, 100, 'gunicorn: worker [web]', cpu_ns=10)
    check = make_check({'proc_name': 'web', 'gunicorn': '/nonexistent'})
    dd_run_check(check)
    check._sampler.sleep = lambda seconds: fake_root.set_cpu(101, 10 + 5_000_000)
    assert run_once(dd_run_check, aggregator, check) == {'working': 1, 'idle': 1}


def test_a_worker_whose_pool_thread_computes_is_working(fake_root, make_check, aggregator, dd_run_check):
    # /proc/PID/schedstat is the main thread's: a gthread worker computes in a pool thread.
    fake_root.add(100, 1, 'gunicorn: master [web]', children=(101, 102))
    fake_root.add(101, 100, 'gunicorn: worker [web]', threads=3)
    fake_root.add(102, 100, 'gunicorn: worker [web]', threads=3)
    check = make_check({'proc_name': 'web', 'gunicorn': '/nonexistent'})
    dd_run_check(check)
    check._sampler.sleep = lambda seconds: fake_root.set_thread_cpu(101, 10102, 5_000_000)
    assert run_once(dd_run_check, aggregator, check) == {'working': 1, 'idle': 1}


def test_without_schedstat_clock_ticks_are_used(fake_root, make_check, aggregator, dd_run_check):
    fake_root.add(100, 1, 'gunicorn: master [web]', children=(101, 102))
    fake_root.add(101, 100, 'gunicorn: worker [web]', ticks=5)
    fake_root.add(102, 100, 'gunicorn: worker [web]', ticks=5)
    for pid in (101, 102):
        (fake_root.root / str(pid) / 'schedstat').unlink()  # a kernel without CONFIG_SCHED_INFO
    check = make_check({'proc_name': 'web', 'gunicorn': '/nonexistent'})

    def one_tick(seconds):
        fake_root.set_stat(101, ppid=100, comm='gunicorn: worke', ticks=6)

    dd_run_check(check)
    check._sampler.sleep = one_tick
    assert run_once(dd_run_check, aggregator, check) == {'working': 1, 'idle': 1}
    assert check._sampler.use_schedstat is False


def test_the_master_vanishing_between_runs_is_critical_not_an_error(fake_root, make_check, aggregator, dd_run_check):
    fake_root.add(100, 1, 'gunicorn: master [web]', children=(101,))
    fake_root.add(101, 100, 'gunicorn: worker [web]')
    check = make_check({'proc_name': 'web', 'gunicorn': '/nonexistent', 'tags': ['a:b']})
    dd_run_check(check)
    fake_root.remove(100)
    assert run_once(dd_run_check, aggregator, check) == {}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.CRITICAL, tags=['a:b', 'app:web'], count=1)


def test_unreadable_processes_are_named_in_the_critical_message(fake_root, make_check, aggregator, dd_run_check):
    fake_root.add(100, 1, 'gunicorn: master [web]')
    (fake_root.root / '100' / 'comm').unlink()
    (fake_root.root / '100' / 'comm').mkdir()  # reading a directory fails like a denied file does (EISDIR)
    check = make_check({'proc_name': 'web'})
    run_once(dd_run_check, aggregator, check)
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.CRITICAL, message=r'.*1 processes could not be read.*'
    )


@pytest.mark.parametrize(
    'setting, argv',
    [
        ('gunicorn', ['gunicorn', '--version']),
        ('/srv/app/venv/bin/gunicorn', ['/srv/app/venv/bin/gunicorn', '--version']),
        ('docker exec "web app" gunicorn', ['docker', 'exec', 'web app', 'gunicorn', '--version']),
        (['/opt/my gunicorn'], ['/opt/my gunicorn', '--version']),
    ],
)
def test_version_command_is_split_without_a_shell(setting, argv):
    assert version.command(setting) == argv


@pytest.mark.parametrize(
    'output, expected',
    [
        ('gunicorn (version 23.0.0)\n', '23.0.0'),
        ('gunicorn (version 27.0.1)', '27.0.1'),
        ('usage: gunicorn [OPTIONS] [APP_MODULE]', None),
        ('', None),
    ],
)
def test_version_parsing(output, expected):
    assert version.parse_version(output) == expected


def test_version_errors_are_reported_not_raised(tmp_path):
    with pytest.raises(version.VersionError, match='cannot run'):
        version.read_version(str(tmp_path / 'missing'))
    with pytest.raises(version.VersionError, match='empty'):
        version.read_version('')
    script = tmp_path / 'slow'
    script.write_text('#!/bin/sh\nexec sleep 30\n')
    script.chmod(0o755)
    with pytest.raises(version.VersionError, match='cannot run'):
        version.read_version(str(script), timeout=0.2)


def test_the_installed_version_is_read_in_the_masters_root_without_following_links(tmp_path, monkeypatch):
    from datadog_checks.gunicorn.sources.procfs import ProcFS

    root = tmp_path / 'root'
    site = root / 'venv' / 'lib' / 'python3.13' / 'site-packages'
    site.mkdir(parents=True)
    (site / 'gunicorn-27.0.1.dist-info').mkdir()
    procfs = ProcFS(str(tmp_path / 'proc'))
    monkeypatch.setattr(ProcFS, 'shares_root', lambda self, pid: False)
    monkeypatch.setattr(ProcFS, 'path', lambda self, pid, *parts: str(root) if parts == ('root',) else 'x')
    monkeypatch.setattr(ProcFS, 'read_mapped_paths', lambda self, pid: [])
    argv = ['/venv/bin/python3.13', '/venv/bin/gunicorn', 'app:app']
    assert version.installed_version(procfs, 100, argv) == '27.0.1'
    # A link inside the master's root that points out of it (an absolute link resolves against the Agent's root).
    (root / 'venv2' / 'lib').mkdir(parents=True)
    os.symlink(str(site.parent), root / 'venv2' / 'lib' / 'python3.13')
    with pytest.raises(version.VersionError, match='no gunicorn'):
        version.installed_version(procfs, 100, ['/venv2/bin/python3.13', 'app:app'])
