"""Resource accounting on fake proc trees: baselines, clocks, and what is absent rather than wrong."""

from __future__ import annotations

import logging

import pytest

from datadog_checks.gunicorn.collectors.cpu import CpuSampler
from datadog_checks.gunicorn.collectors.discovery import Discovery
from datadog_checks.gunicorn.collectors.resources import (
    PAGE_SIZE,
    PSS_REFRESH_SECONDS,
    TICKS_PER_SECOND,
    ResourceTracker,
)
from datadog_checks.gunicorn.sources.procfs import ProcessAccessDenied, ProcFS

from ..fakeproc import FakeProc

LOG = logging.getLogger('test')


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, 'gunicorn: master [a]', children=(101, 102), start=10 * TICKS_PER_SECOND)
    fake.add(101, 100, 'gunicorn: worker [a]', start=20 * TICKS_PER_SECOND, threads=2)
    fake.add(102, 100, 'gunicorn: worker [a]', start=30 * TICKS_PER_SECOND)
    (tmp_path / 'uptime').write_text('50.00 90.00\n')
    for pid in (100, 101, 102):
        (tmp_path / str(pid) / 'smaps_rollup').write_text('Rss: 10000 kB\nPss: %d kB\n' % pid)
    procfs = ProcFS(str(tmp_path))
    clock = Clock()
    return fake, Discovery(procfs, 'a', LOG), ResourceTracker(procfs, LOG, clock=clock), CpuSampler(procfs, LOG), clock


def measure(discovery, tracker, sampler):
    trees = discovery.trees()
    return tracker.measure(trees, sampler.sample([w.pid for w in trees[0].workers]), sampler)


def test_first_run_has_no_rates_and_no_restarts(setup):
    fake, discovery, tracker, sampler, clock = setup
    usage = measure(discovery, tracker, sampler)
    roles = {r.role: r for r in usage.roles}
    assert usage.masters == 1 and usage.worker_exits is None
    assert usage.master_uptime_seconds == pytest.approx(40)
    assert (usage.worker_age_min_seconds, usage.worker_age_max_seconds) == (pytest.approx(20), pytest.approx(30))
    assert roles['worker'].threads == 3 and roles['worker'].processes == 2
    assert roles['worker'].rss_bytes == 2 * 2500 * PAGE_SIZE
    assert roles['worker'].pss_bytes == (101 + 102) * 1024 and roles['worker'].pss_bytes_max == 102 * 1024
    assert roles['worker'].cpu_pct is None and roles['worker'].run_queue_wait_pct is None


def test_cpu_and_run_queue_wait_between_runs(setup):
    fake, discovery, tracker, sampler, clock = setup
    measure(discovery, tracker, sampler)
    clock.now += 10
    (fake.root / '101' / 'schedstat').write_text('%d %d 5\n' % (5 * 10**9, 10**9))  # 5 s on CPU, 1 s waiting
    usage = measure(discovery, tracker, sampler)
    worker = next(r for r in usage.roles if r.role == 'worker')
    assert worker.cpu_pct == pytest.approx(50.0)
    assert worker.run_queue_wait_pct == pytest.approx(10.0)
    assert usage.worker_exits == 0


def test_a_worker_replaced_between_runs_is_one_exit_and_has_no_baseline(setup):
    fake, discovery, tracker, sampler, clock = setup
    measure(discovery, tracker, sampler)
    fake.remove(102)
    fake.add(103, 100, 'gunicorn: worker [a]', cpu_ns=10**12)  # a huge lifetime CPU must not count as a rate
    fake.set_children(100, (101, 103))
    clock.now += 10
    usage = measure(discovery, tracker, sampler)
    worker = next(r for r in usage.roles if r.role == 'worker')
    assert usage.worker_exits == 1
    assert worker.cpu_pct == 0.0


def test_pss_denied_is_absent_and_retried_only_after_the_refresh_interval(setup, monkeypatch):
    fake, discovery, tracker, sampler, clock = setup
    calls = []

    def deny(self, pid):
        calls.append(pid)
        raise ProcessAccessDenied(pid, 'smaps_rollup', 'permission denied')

    monkeypatch.setattr(ProcFS, 'read_pss', deny)
    usage = measure(discovery, tracker, sampler)
    assert all(r.pss_bytes is None for r in usage.roles)
    measure(discovery, tracker, sampler)
    assert len(calls) == 1  # one attempt, then quiet until the next refresh
    clock.now += PSS_REFRESH_SECONDS
    measure(discovery, tracker, sampler)
    assert len(calls) == 2


def test_pss_of_a_new_worker_is_read_at_once_and_others_come_from_the_cache(setup, monkeypatch):
    fake, discovery, tracker, sampler, clock = setup
    measure(discovery, tracker, sampler)
    fake.add(103, 100, 'gunicorn: worker [a]')
    (fake.root / '103' / 'smaps_rollup').write_text('Pss: 7 kB\n')
    fake.set_children(100, (101, 102, 103))
    reads = []
    real = ProcFS.read_pss
    monkeypatch.setattr(ProcFS, 'read_pss', lambda self, pid: reads.append(pid) or real(self, pid))
    usage = measure(discovery, tracker, sampler)
    assert reads == [103]
    assert next(r for r in usage.roles if r.role == 'worker').pss_bytes == (101 + 102 + 7) * 1024


def test_no_uptime_means_no_ages(setup):
    fake, discovery, tracker, sampler, clock = setup
    (fake.root / 'uptime').unlink()
    usage = measure(discovery, tracker, sampler)
    assert usage.master_uptime_seconds is None and usage.worker_age_min_seconds is None
