"""The whole check against a control socket that breaks the protocol, served by a fake master the check trusts.

The check talks only to a socket whose listener (SO_PEERCRED) is the master and whose `show stats` names it, so a
thread of the test cannot play the fault server here: tests/apps/fake_master.py is a process titled as a master, with
two sleeping children titled as its workers, that answers `show stats` with its own pid and breaks the protocol one
way, either in that reply or in the ones after it. Whatever it sends, a run must succeed, say the workers are there
(`gunicorn.workers` comes from the process table), send no figure outside what Gunicorn can report, and tell the user
at most once.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
import uuid

import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.gunicorn.sources.control_socket.replies import PID_MAX, SECONDS_MAX

from ...common import control_figures, run_once
from ...gunicorn_env import APPS, gunicorn_venv

pytestmark = pytest.mark.integration

# The bound each figure must stay within, whatever the peer said.
BOUNDS = {
    'gunicorn.workers.target': (0, PID_MAX),
    'gunicorn.worker.timeout': (0, SECONDS_MAX),
    'gunicorn.worker.threads': (1, PID_MAX),
    'gunicorn.worker.heartbeat_age.max': (0, SECONDS_MAX),
    'gunicorn.worker.heartbeat_age.avg': (0, SECONDS_MAX),
}

SHAPES = (
    'nested',  # JSON nested 100,000 deep
    'huge_int',  # 400-digit integers for every count, age and worker pid
    'long_int',  # a 5,000-digit integer: more than Python's json reader converts
    'nan',  # NaN, Infinity and -Infinity for uptime, heartbeats and timeouts
    'strings',  # every number sent as a string
    'data_list',  # `data` is a list
    'missing',  # no fields at all (a stats reply keeps its pid)
    'unknown',  # unknown fields beside the real ones
    'oversize',  # a 5 MiB frame, beyond the check's 4 MiB cap
    'wrong_id',  # the reply carries another request's id
    'mid_frame',  # the peer ends the stream halfway through a frame
    'mid_frame_reset',  # the peer closes halfway through a frame with requests unread: the connection is reset
)
HEARTBEAT = 0.25  # what the fake master's workers report when nothing is wrong with them
# What a run sends: the target from `show stats`, the worst heartbeat from `show workers`, and how many warnings.
# In `stats`, a reply that is no stats reply costs the run every figure and says so once; a field out of shape costs
# that figure only, silently. In `rest` the stats already count: a reply that cannot be read costs the figures it
# carried, silently, except a `data` of the wrong type, which makes the whole exchange a protocol error.
EXPECTED = {
    ('nested', 'stats'): (None, None, 1),
    ('huge_int', 'stats'): (None, HEARTBEAT, 0),
    ('long_int', 'stats'): (None, None, 1),
    ('nan', 'stats'): (2, HEARTBEAT, 0),
    ('strings', 'stats'): (None, HEARTBEAT, 0),
    ('data_list', 'stats'): (None, None, 1),
    ('missing', 'stats'): (None, HEARTBEAT, 0),
    ('unknown', 'stats'): (2, HEARTBEAT, 0),
    ('oversize', 'stats'): (None, None, 1),
    ('wrong_id', 'stats'): (None, None, 1),
    ('mid_frame', 'stats'): (None, None, 1),
    ('mid_frame_reset', 'stats'): (None, None, 1),
    ('nested', 'rest'): (2, None, 0),
    ('huge_int', 'rest'): (2, None, 0),
    ('long_int', 'rest'): (2, None, 0),
    ('nan', 'rest'): (2, None, 0),
    ('strings', 'rest'): (2, None, 0),
    ('data_list', 'rest'): (None, None, 1),
    ('missing', 'rest'): (2, None, 0),
    ('unknown', 'rest'): (2, HEARTBEAT, 0),
    ('oversize', 'rest'): (2, None, 0),
    ('wrong_id', 'rest'): (2, None, 0),
    ('mid_frame', 'rest'): (2, None, 0),
    ('mid_frame_reset', 'rest'): (2, None, 0),
}
# A run costs the 0.1 s CPU window plus at most the 1 s control-socket timeout; far above that is a hang.
RUN_SECONDS = 5.0


@contextlib.contextmanager
def fake_master(directory, shape: str, where: str):
    """A running fake master; yields (name, socket path, pid); kills its whole session afterwards."""
    name = 'hostile-%s' % uuid.uuid4().hex[:8]
    path = os.path.join(directory, 'fake.ctl')
    python = str(gunicorn_venv() / 'bin' / 'python')
    proc = subprocess.Popen(
        [python, str(APPS / 'fake_master.py'), name, path, shape, where],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith('ready '), 'the fake master did not start: %r' % (line + proc.stdout.read(2000).decode())
        yield name, path, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.parametrize('where', ['stats', 'rest'])
@pytest.mark.parametrize('shape', SHAPES)
def test_a_hostile_reply_costs_at_most_its_figures_and_one_warning(
    shape, where, sock_dir, make_check, aggregator, dd_run_check
):
    target, heartbeat, warned = EXPECTED[shape, where]
    with fake_master(sock_dir, shape, where) as (name, path, pid):
        # The fake has no installation, and the version is not the subject here: a command prints one.
        check = make_check({'proc_name': name, 'control_socket': path, 'gunicorn': 'echo gunicorn (version 27.0.1)'})
        for run in range(2):  # the second run reads counters against the first, and configuration from its cache
            check.warnings.clear()
            started = time.monotonic()
            assert run_once(dd_run_check, aggregator, check) == {'working': 0, 'idle': 2}, run
            assert time.monotonic() - started < RUN_SECONDS
            aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, count=1)
            figures = control_figures(aggregator)
            for metric, values in figures.items():
                low, high = BOUNDS.get(metric, (0, 2**53))
                assert all(math.isfinite(v) and low <= v <= high for v in values), (metric, values)
            assert figures['gunicorn.workers.target'] == ([] if target is None else [target]), figures
            assert figures['gunicorn.worker.heartbeat_age.max'] == ([] if heartbeat is None else [heartbeat]), figures
            assert len(check.warnings) == warned, check.warnings
            if warned:
                (told,) = check.warnings
                assert 'no control-socket metrics for master %d' % pid in told and path in told, told
                assert not any(figures.values()), figures
