from __future__ import annotations

import logging
import os
import pickle
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

from datadog_checks.base.stubs.aggregator import AggregatorStub
from datadog_checks.gunicorn import configuration

NOBODY = 65534
T = TypeVar('T')


def worker_gauges(aggregator: AggregatorStub) -> dict[str, float]:
    """The last `gunicorn.workers` value per state."""
    values = {}
    for metric in aggregator.metrics('gunicorn.workers'):
        state = next(t.split(':', 1)[1] for t in metric.tags if t.startswith('state:'))
        values[state] = metric.value
    return values


def run_once(dd_run_check, aggregator: AggregatorStub, check) -> dict[str, float]:
    aggregator.reset()
    dd_run_check(check)
    return worker_gauges(aggregator)


def as_nobody(work: Callable[[], T]) -> T:
    """`work()` in a forked child that dropped root (uid and gid `nobody`, no groups, so no capabilities), as an Agent
    without privileges would run; its result comes back pickled, its exception as an AssertionError with the child's
    traceback. Do what lazily imports modules once as root first: the child may no longer read them."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            outcome = (True, work())
        except BaseException:
            outcome = (False, traceback.format_exc())
        try:
            with os.fdopen(write_end, 'wb') as out:
                pickle.dump(outcome, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, 'rb') as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    assert data, 'the unprivileged child died without a word'
    done, result = pickle.loads(data)
    assert done, 'the unprivileged child failed:\n%s' % result
    return result


def run_as_nobody(instance: dict, runs: int = 2) -> dict:
    """Run the check `runs` times as `nobody` (`as_nobody`).

    Returns what the child saw: `errors` (one run() result per run), `metrics` ({name: [(value, tags)]}) and `debug`
    (every message the check logged at debug level or above).
    """

    def runs_of_the_check() -> dict:
        from datadog_checks.base.stubs import aggregator
        from datadog_checks.gunicorn import GunicornCheck

        aggregator.reset()
        check = GunicornCheck('gunicorn', {}, [instance])
        said: list[str] = []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = lambda record: said.append(record.getMessage())
        check.log.logger.addHandler(handler)
        check.log.logger.setLevel(logging.DEBUG)
        errors = [check.run() for _ in range(runs)]
        found = {name: [(m.value, m.tags) for m in metrics] for name, metrics in aggregator._metrics.items()}
        return {'errors': errors, 'metrics': found, 'debug': said}

    return as_nobody(runs_of_the_check)


class TimeoutExpired(AssertionError):
    pass


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = 'condition', interval: float = 0.02):
    """Poll until `predicate()` is truthy and return its value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutExpired('timed out after %.1fs waiting for %s' % (timeout, what))
        time.sleep(interval)


def instance_for(server, **extra) -> dict:
    """A check instance for a test server: its name, a team tag, and its own `gunicorn` for the version."""
    return {'proc_name': server.name, 'tags': ['team:web'], 'gunicorn': str(server.venv / 'bin' / 'gunicorn'), **extra}


def cpu_ns(pid: int) -> int:
    with open('/proc/%d/schedstat' % pid) as f:
        return int(f.read().split()[0])


# Every figure a master's control socket feeds, as sent; the process table feeds the others.
CONTROL_SOCKET_METRICS = tuple('gunicorn.' + name for name in configuration.CONTROL_SOCKET_METRICS)


def control_figures(aggregator: AggregatorStub) -> dict[str, list[float]]:
    """The values of every control-socket figure the last runs sent, by metric name (empty lists included)."""
    return {name: [m.value for m in aggregator.metrics(name)] for name in CONTROL_SOCKET_METRICS}
