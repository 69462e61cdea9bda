"""One node-wide instance (`app_autodiscovery`) against real Gunicorn masters that start and stop beside it.

Other Gunicorn servers run on the machine while these tests do (other tests, other people's): every assertion is
about this test's own apps, whose names share a prefix no other server has, and every instance selects them with
`include` unless the test is about what a run finds beside them.
"""

from __future__ import annotations

import uuid

import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.dev.utils import get_metadata_metrics

from .common import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return 'gtest-%s-' % uuid.uuid4().hex[:8]


def node_wide(make_check, server, **options) -> object:
    instance = {
        'app_autodiscovery': {'enabled': True, **options},
        'tags': ['team:web'],
        'gunicorn': str(server.venv / 'bin' / 'gunicorn'),
        'cpu_sample_interval': 0.05,
    }
    return make_check(instance)


def workers_by_app(aggregator, prefix: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for metric in aggregator.metrics('gunicorn.workers'):
        app = next(t for t in metric.tags if t.startswith('app:'))[len('app:') :]
        if app.startswith(prefix):
            total[app[len(prefix) :]] = total.get(app[len(prefix) :], 0) + int(metric.value)
    return total


def run(check, dd_run_check, aggregator, prefix: str) -> dict[str, int]:
    aggregator.reset()
    dd_run_check(check)
    return workers_by_app(aggregator, prefix)


def test_every_app_under_its_own_tag_with_everything_single_app_mode_sends(
    prefix, gunicorn, make_check, aggregator, dd_run_check
):
    shop = gunicorn(name=prefix + 'shop', workers=2)
    gunicorn(name=prefix + 'api', workers=3, args=['-k', 'gthread', '--threads', '2'])
    # No titles, and the name only in GUNICORN_CMD_ARGS: the check reads it from the master's environment.
    env_named = gunicorn(name=None, workers=1, setproctitle=False, env={'GUNICORN_CMD_ARGS': '-n %senv' % prefix})
    check = node_wide(make_check, shop, include=[prefix])
    assert run(check, dd_run_check, aggregator, prefix) == {'shop': 2, 'api': 3, 'env': 1}
    for app in ('shop', 'api', 'env'):
        aggregator.assert_service_check(
            'gunicorn.is_running', AgentCheck.OK, tags=['team:web', 'app:%s%s' % (prefix, app)], count=1
        )
    aggregator.assert_metrics_using_metadata(get_metadata_metrics(), check_submission_type=True)
    # Resources per app, as single-app mode sends them.
    aggregator.assert_metric('gunicorn.masters', 1, tags=['team:web', 'app:%sapi' % prefix])
    assert any('of %senv runs without process titles' % prefix in w for w in check.warnings)
    for metric in aggregator.metrics('gunicorn.workers'):
        assert not any(t.startswith(('pid', 'cmdline', 'command')) for t in metric.tags)
    assert env_named.worker_pids()  # still running: the counts above were its own


def test_a_master_started_later_is_reported_and_one_stopped_is_not_critical(
    prefix, gunicorn, make_check, aggregator, dd_run_check
):
    first = gunicorn(name=prefix + 'first', workers=1)
    check = node_wide(make_check, first, include=[prefix])
    assert run(check, dd_run_check, aggregator, prefix) == {'first': 1}
    later = gunicorn(name=prefix + 'later', workers=2)
    seen = [run(check, dd_run_check, aggregator, prefix) for _ in range(2)]
    assert seen[-1] == {'first': 1, 'later': 2}, seen  # on the next run or the one after
    later.stop()
    wait_for(lambda: not later.group_processes(), 15, 'the later server to exit')
    assert run(check, dd_run_check, aggregator, prefix) == {'first': 1}
    assert [s.status for s in aggregator.service_checks('gunicorn.is_running')] == [AgentCheck.OK]
    first.stop()
    wait_for(lambda: not first.group_processes(), 15, 'the first server to exit')
    assert run(check, dd_run_check, aggregator, prefix) == {}
    assert aggregator.service_checks('gunicorn.is_running') == []


def test_include_exclude_and_max_apps(prefix, gunicorn, make_check, aggregator, dd_run_check):
    servers = [gunicorn(name=prefix + app, workers=1) for app in ('a', 'b', 'c', 'c-canary')]
    check = node_wide(make_check, servers[0], include=[prefix], exclude=['.*-canary$'], max_apps=2)
    assert run(check, dd_run_check, aggregator, prefix) == {'a': 1, 'b': 1}
    assert len(check.warnings) == 1
    assert '1 Gunicorn application(s)' in check.warnings[0] and '%sc.' % prefix in check.warnings[0]


def test_without_include_this_tests_apps_are_among_whatever_else_runs(
    prefix, gunicorn, make_check, aggregator, dd_run_check
):
    server = gunicorn(name=prefix + 'mine', workers=2)
    check = node_wide(make_check, server, max_apps=1000)
    assert run(check, dd_run_check, aggregator, prefix) == {'mine': 2}
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['team:web', 'app:%smine' % prefix])


def test_an_untitled_master_is_named_by_the_proc_name_of_its_configuration_file(
    prefix, tmp_path, gunicorn, make_check, aggregator, dd_run_check
):
    config = tmp_path / 'gunicorn_conf.py'
    config.write_text('workers = 1\nproc_name = %r\n' % (prefix + 'from-file'))
    server = gunicorn(name=None, workers=1, setproctitle=False, args=['-c', str(config)])
    check = node_wide(make_check, server, include=[prefix])
    assert run(check, dd_run_check, aggregator, prefix) == {'from-file': 1}
