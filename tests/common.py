from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable

from datadog_checks.base.stubs.aggregator import AggregatorStub

NOBODY = 65534


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


def run_as_nobody(instance: dict, runs: int = 2) -> dict:
    """Run the check `runs` times in a forked child that dropped root, as an Agent without privileges would.

    Returns what the child saw: `errors` (one run() result per run), `metrics` ({name: [(value, tags)]}) and `debug`
    (every message the check logged at debug level or above).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
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
            with os.fdopen(write_end, 'wb') as out:
                pickle.dump({'errors': errors, 'metrics': found, 'debug': said}, out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, 'rb') as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, 'the unprivileged child failed'
    return pickle.loads(data)


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


# Every figure a master's control socket feeds (metadata.csv); the process table feeds the others.
CONTROL_SOCKET_METRICS = (
    'gunicorn.workers.target',
    'gunicorn.workers.spawned',
    'gunicorn.workers.killed',
    'gunicorn.reloads',
    'gunicorn.worker.timeout',
    'gunicorn.worker.threads',
    'gunicorn.worker.max_requests',
    'gunicorn.worker.heartbeat_age.max',
    'gunicorn.worker.heartbeat_age.avg',
    'gunicorn.workers.near_timeout',
    'gunicorn.dirty_arbiter.up',
    'gunicorn.dirty_worker.heartbeat_age.max',
    'gunicorn.dirty_worker.heartbeat_age.avg',
)


def control_figures(aggregator: AggregatorStub) -> dict[str, list[float]]:
    """The values of every control-socket figure the last runs sent, by metric name (empty lists included)."""
    return {name: [m.value for m in aggregator.metrics(name)] for name in CONTROL_SOCKET_METRICS}
