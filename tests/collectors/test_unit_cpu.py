"""The CPU sample window: how long the sampler sleeps between its two passes."""

from __future__ import annotations

import logging

from datadog_checks.gunicorn.collectors.cpu import NS_PER_TICK, CpuSampler
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ..fakeproc import FakeProc


def sampler_with_clock(tmp_path, ticks: list[float], slept: list[float]) -> CpuSampler:
    fake = FakeProc(tmp_path)
    fake.add(100, 1, 'gunicorn: master [web]', children=(101,))
    fake.add(101, 100, 'gunicorn: worker [web]', cpu_ns=10)
    clock = iter(ticks)
    return CpuSampler(ProcFS(str(tmp_path)), logging.getLogger('test'), sleep=slept.append, clock=lambda: next(clock))


def test_the_sleep_is_what_the_first_pass_left_of_the_window(tmp_path):
    # Each worker is watched from its first read to its second: the first pass counts towards the window.
    slept: list[float] = []
    counts, _ = sampler_with_clock(tmp_path, [10.0, 10.03], slept).count([101], 0.1)
    assert len(slept) == 1 and abs(slept[0] - 0.07) < 1e-9
    assert counts.total == 1


def test_a_first_pass_longer_than_the_window_does_not_sleep(tmp_path):
    slept: list[float] = []
    sampler_with_clock(tmp_path, [10.0, 10.5], slept).count([101], 0.1)
    assert slept == [0.0]


def test_a_vanished_worker_is_left_out_and_schedstat_kept(tmp_path):
    fake = FakeProc(tmp_path).add(101, 1, 'w', cpu_ns=10).add(102, 1, 'w', cpu_ns=20)
    sampler = CpuSampler(ProcFS(str(tmp_path)), logging.getLogger('test'))
    fake.remove(101)
    assert sampler.sample([101, 102]) == {102: (20, 0)}
    assert sampler.use_schedstat


def test_from_the_first_process_without_schedstat_on_clock_ticks_are_used(tmp_path):
    # A kernel without CONFIG_SCHED_INFO: the process is there, its schedstat is not.
    fake = FakeProc(tmp_path).add(101, 1, 'w', cpu_ns=10, ticks=1)
    fake.add(102, 1, 'w', cpu_ns=20, ticks=2).add(103, 1, 'w', cpu_ns=30, ticks=3, threads=2)
    (tmp_path / '102' / 'schedstat').unlink()
    sampler = CpuSampler(ProcFS(str(tmp_path)), logging.getLogger('test'))
    samples = sampler.sample([101, 102, 103], {103: 2})
    assert samples == {101: (10, 0), 102: (2 * NS_PER_TICK, None), 103: (3 * NS_PER_TICK, None)}
    assert not sampler.use_schedstat
