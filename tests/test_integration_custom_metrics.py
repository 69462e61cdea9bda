"""What one app costs in custom metrics, measured from what the check sends against real Gunicorn servers, and what a
`metric_patterns` selection sends and reads.

Datadog counts a custom metric per metric name and combination of tag values (the host included): every series the
check sends but gunicorn.workers, the one metric Datadog's own gunicorn integration publishes from its check. The
README's table of series per app is checked against these measurements.
"""

from __future__ import annotations

import re

import pytest

from datadog_checks.gunicorn.configuration import CHECK_METRICS, WORKERS_METRIC
from datadog_checks.gunicorn.sources.control_socket import client as control_socket_client
from datadog_checks.gunicorn.sources.procfs import ProcFS
from datadog_checks.gunicorn.sources.sockets.tables import SocketTables

from .common import instance_for, wait_for
from .gunicorn_env import REPO

pytestmark = [pytest.mark.integration, pytest.mark.every_agent]

# The README's rows: how the app runs, and the last metric to appear once it is up (the control socket comes a
# moment after the workers, the dirty workers' heartbeats after them).
APPS = {
    'sync': ({}, 'workers.target'),
    'gthread, 4 threads': ({'args': ['--threads', '4']}, 'workers.target'),
    'asgi': ({'args': ['-k', 'asgi'], 'app': 'asgi_app:app'}, 'workers.target'),
    'sync + 2 dirty workers': (
        {'args': ['--dirty-app', 'dirty:Tasks', '--dirty-workers', '2']},
        'dirty_worker.heartbeat_age.max',
    ),
}
# The README's `metric_patterns` examples: exactly what Datadog's own check sends, and what the recommended monitors
# need from the check.
DATADOG_CHECK_ONLY = "(a) Datadog's check only"
MONITORS_NEED = '(b) what the monitors need'
SELECTIONS = {
    DATADOG_CHECK_ONLY: {'include': [r'^gunicorn\.workers$']},
    MONITORS_NEED: {
        'include': [r'^gunicorn\.workers$', r'^gunicorn\.workers\.near_timeout$', r'^gunicorn\.memory\.rss\.max$']
    },
}


def series(aggregator) -> dict[str, set[tuple[str, ...]]]:
    """Each metric the last run sent, with its distinct tag sets."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for name in aggregator.metric_names:
        for metric in aggregator.metrics(name):
            found.setdefault(name, set()).add(tuple(sorted(metric.tags)))
    return found


def second_run(check, aggregator, dd_run_check) -> dict[str, set[tuple[str, ...]]]:
    # The first run has no baseline for CPU shares and churn counts: a steady run is the second.
    dd_run_check(check)
    aggregator.reset()
    dd_run_check(check)
    return series(aggregator)


def readme_table() -> dict[str, tuple[int, int]]:
    """The README's rows of series per app, `| app | standard | custom |`: {app: (standard, custom)}."""
    text = (REPO / 'README.md').read_text(encoding='utf-8')
    rows = re.findall(r'^\| ([^|]+?) \| (\d+) \| (\d+) \|$', text, re.M)
    table = {name.replace('`', ''): (int(standard), int(custom)) for name, standard, custom in rows}
    return {name: counts for name, counts in table.items() if name in APPS or name in SELECTIONS}


def counted(sent: dict[str, set[tuple[str, ...]]]) -> tuple[int, int, str]:
    """Series of Datadog's standard gunicorn.workers, custom series (every other one), and a per-metric breakdown."""
    standard = len(sent.get('gunicorn.' + WORKERS_METRIC, ()))
    custom = sum(len(tag_sets) for name, tag_sets in sent.items() if name != 'gunicorn.' + WORKERS_METRIC)
    return standard, custom, ' '.join('%s=%d' % (name, len(tags)) for name, tags in sorted(sent.items()))


@pytest.mark.parametrize('app', sorted(APPS))
def test_series_per_app_in_the_default_configuration(app, gunicorn, make_check, aggregator, dd_run_check):
    how, last = APPS[app]
    server = gunicorn(workers=3, **how)
    check = make_check(instance_for(server, tags=[]))
    wait_for(lambda: 'gunicorn.' + last in second_run(check, aggregator, dd_run_check), 20, last)
    sent = second_run(check, aggregator, dd_run_check)
    assert set(sent) <= {'gunicorn.' + name for name in CHECK_METRICS}
    standard, custom, per_metric = counted(sent)
    if 'gunicorn.memory.pss' not in sent:
        # The README counts PSS, read by an Agent with root or CAP_SYS_PTRACE: one series per role for each of two.
        custom += 2 * len(sent['gunicorn.memory.rss'])
    # The tags that multiply them: state on gunicorn.workers, role and listener on the others (an app has one
    # worker class).
    assert {tag.split(':')[0] for tags in sent.values() for tag_set in tags for tag in tag_set} <= {
        'app',
        'state',
        'role',
        'listener',
        'worker_class',
    }
    assert (standard, custom) == readme_table().get(app), '%s: %d standard, %d custom: %s' % (
        app,
        standard,
        custom,
        per_metric,
    )


def test_what_datadogs_check_sends_and_nothing_else_is_read(
    gunicorn, make_check, aggregator, dd_run_check, monkeypatch
):
    server = gunicorn(workers=2)
    reads = []
    monkeypatch.setattr(
        control_socket_client.ControlSocketClient, '_connect', lambda self, *a: reads.append('control socket')
    )
    monkeypatch.setattr(SocketTables, 'queues', lambda self, *a: reads.append('socket tables'))
    monkeypatch.setattr(ProcFS, 'read_pss', lambda self, pid: reads.append('pss'))
    check = make_check(instance_for(server, tags=[], metric_patterns=SELECTIONS[DATADOG_CHECK_ONLY]))
    sent = second_run(check, aggregator, dd_run_check)
    assert set(sent) == {'gunicorn.workers'}
    assert counted(sent)[:2] == readme_table().get(DATADOG_CHECK_ONLY)
    assert reads == []
    aggregator.assert_service_check('gunicorn.is_running', check.OK)


def test_what_the_monitors_need(gunicorn, make_check, aggregator, dd_run_check):
    server = gunicorn(workers=2)
    check = make_check(instance_for(server, tags=[], metric_patterns=SELECTIONS[MONITORS_NEED]))
    wait_for(lambda: 'gunicorn.workers.near_timeout' in second_run(check, aggregator, dd_run_check), 20, 'heartbeats')
    sent = second_run(check, aggregator, dd_run_check)
    assert set(sent) == {'gunicorn.workers', 'gunicorn.workers.near_timeout', 'gunicorn.memory.rss.max'}
    standard, custom, per_metric = counted(sent)
    assert (standard, custom) == readme_table().get(MONITORS_NEED), per_metric
    # The socket tables feed none of them: not read, so gunicorn.workers is the CPU window's split.
    assert check._saturation == {}
