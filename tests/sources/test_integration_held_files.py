"""The check keeps its processes' stat and schedstat files open between runs: never more than it watches, none after."""

from __future__ import annotations

import os
import signal

import pytest

from ..common import instance_for, wait_for

pytestmark = pytest.mark.integration


def open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def held_pids(check) -> set[int]:
    return {pid for pid, _ in check._procfs._held}


def test_held_files_follow_the_workers_and_cancel_closes_them(gunicorn, make_check, dd_run_check):
    baseline = open_fds()
    server = gunicorn(workers=3)
    check = make_check(instance_for(server))
    # The first run walks the process table and reads the stat of every master it finds (other tests' too): those
    # files are closed when a whole run has gone by without reading them.
    for _ in range(3):
        dd_run_check(check)
    watched = {server.master_pid, *server.worker_pids()}
    assert held_pids(check) == watched
    # Beside the proc files, one netlink socket for the listeners' sock_diag dumps.
    assert [c.tables.session._sock is not None for c in check._saturation.values()] == [True]
    assert open_fds() == baseline + check._procfs.held + 1

    victim = server.worker_pids()[0]
    server.signal(signal.SIGTTOU)  # the master stops its oldest worker
    server.wait_ready(workers=2)
    wait_for(lambda: not os.path.exists('/proc/%d' % victim), 10, 'the retired worker to be reaped')
    dd_run_check(check)
    dd_run_check(check)
    assert held_pids(check) == {server.master_pid, *server.worker_pids()}

    check.cancel()  # what the Agent calls when it unschedules the instance
    assert check._procfs.held == 0
    assert open_fds() == baseline
    dd_run_check(check)  # a cancelled check that runs anyway reads by path
    assert open_fds() == baseline
