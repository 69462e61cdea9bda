from __future__ import annotations

from datadog_checks.base.stubs.aggregator import AggregatorStub


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
