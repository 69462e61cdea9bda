"""The check on fake proc trees, for what finding masters adds: container tags, scoping, warnings, messages."""

from __future__ import annotations

import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import tagger
from datadog_checks.gunicorn import GunicornCheck

from .common import worker_gauges
from .fakeproc import FakeProc

WEB1 = '1' * 64
WEB2 = '2' * 64
VENV = '/srv/venv/bin'


@pytest.fixture
def proc(tmp_path, datadog_agent):
    datadog_agent._config['procfs_path'] = str(tmp_path)
    (tmp_path / 'stat').write_text('btime 0\n')
    tagger.reset()
    yield FakeProc(tmp_path)
    tagger.reset()
    # The stub is reset when a test asks for it, not after: a later test on the real /proc must not read this root.
    datadog_agent.reset()


def titled_app(fake, master, name='web', workers=2, container=None):
    kids = tuple(range(master + 1, master + 1 + workers))
    fake.add(master, 1, 'gunicorn: master [%s]' % name, children=kids)
    for pid in kids:
        fake.add(pid, master, 'gunicorn: worker [%s]' % name)
    if container:
        (fake.root / str(master) / 'cgroup').write_text('0::/kubepods.slice/cri-containerd-%s.scope\n' % container)


def untitled_app(fake, master, name='web', workers=2):
    argv = [VENV + '/python', VENV + '/gunicorn', '-n', name, 'app:app']
    kids = tuple(range(master + 1, master + 1 + workers))
    fake.add(master, 1, argv, comm='gunicorn', children=kids)
    for pid in kids:
        fake.add(pid, master, argv, comm='gunicorn')


def run(check, dd_run_check, aggregator):
    aggregator.reset()
    dd_run_check(check)
    return {
        (
            tuple(sorted(t for t in m.tags if not t.startswith('state:'))),
            next(t for t in m.tags if 'state:' in t),
        ): m.value
        for m in aggregator.metrics('gunicorn.workers')
    }


def make(instance):
    # A version command that runs no Gunicorn: the fake masters have no installation to read.
    version = 'echo gunicorn (version 27.0.1)'
    check = GunicornCheck('gunicorn', {}, [{'cpu_sample_interval': 0.001, 'gunicorn': version, **instance}])
    check.check_id = 'gunicorn:test'
    return check


def test_replicas_in_containers_are_reported_apart(proc, dd_run_check, aggregator):
    titled_app(proc, 100, workers=2, container=WEB1)
    titled_app(proc, 200, workers=3, container=WEB2)
    tagger.set_tags(
        {
            'container_id://%s' % WEB1: ['kube_deployment:web', 'pod_name:web-1'],
            'container_id://%s' % WEB2: ['kube_deployment:web', 'pod_name:web-2'],
        }
    )
    gauges = run(make({'proc_name': 'web', 'tags': ['team:a']}), dd_run_check, aggregator)
    base = ('app:web', 'kube_deployment:web', 'team:a')
    assert gauges == {
        (tuple(sorted((*base, 'pod_name:web-1'))), 'state:idle'): 2,
        (tuple(sorted((*base, 'pod_name:web-1'))), 'state:working'): 0,
        (tuple(sorted((*base, 'pod_name:web-2'))), 'state:idle'): 3,
        (tuple(sorted((*base, 'pod_name:web-2'))), 'state:working'): 0,
    }
    tagger.assert_called('container_id://%s' % WEB1, tagger.ORCHESTRATOR)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, count=2)
    # Every other metric follows the same split: one master per pod, not two masters for the app.
    for pod in ('pod_name:web-1', 'pod_name:web-2'):
        aggregator.assert_metric('gunicorn.masters', 1, tags=[*base, pod], count=1)


def test_masters_with_the_same_tags_are_summed(proc, dd_run_check, aggregator):
    titled_app(proc, 100, workers=2)
    titled_app(proc, 200, workers=3)
    check = make({'proc_name': 'web'})
    run(check, dd_run_check, aggregator)
    assert worker_gauges(aggregator) == {'working': 0, 'idle': 5}
    aggregator.assert_metric('gunicorn.workers', tags=['app:web', 'state:idle'], count=1)


def test_an_autodiscovery_instance_reports_only_its_container(proc, dd_run_check, aggregator):
    titled_app(proc, 100, workers=2, container=WEB1)
    titled_app(proc, 200, workers=3, container=WEB2)
    titled_app(proc, 300, workers=1)  # on the host, in no container
    tagger.set_tags({'container_id://%s' % WEB1: ['pod_name:web-1'], 'container_id://%s' % WEB2: ['pod_name:web-2']})
    # Autodiscovery adds the scheduled container's tags to the instance's own.
    gauges = run(make({'proc_name': 'web', 'tags': ['pod_name:web-2']}), dd_run_check, aggregator)
    assert gauges == {
        (('app:web', 'pod_name:web-2'), 'state:idle'): 3,
        (('app:web', 'pod_name:web-2'), 'state:working'): 0,
    }


def test_titles_missing_is_reported_once(proc, dd_run_check, aggregator):
    untitled_app(proc, 100)
    check = make({'proc_name': 'web'})
    warnings = []
    for _ in range(3):
        run(check, dd_run_check, aggregator)
        warnings += check.warnings
        check.warnings.clear()
        assert worker_gauges(aggregator) == {'working': 0, 'idle': 2}
    assert len(warnings) == 1
    assert 'runs without process titles' in warnings[0] and 'pip install setproctitle' in warnings[0]
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:web'])


def test_a_master_still_importing_its_app(proc, dd_run_check, aggregator):
    proc.add(100, 1, [VENV + '/python', VENV + '/gunicorn', '--preload', '-n', 'web', 'app:app'], comm='gunicorn')
    check = make({'proc_name': 'web'})
    assert run(check, dd_run_check, aggregator)
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.CRITICAL, message=r'master 100 is still starting .*--preload'
    )
    assert check.warnings == []  # not a missing-setproctitle case: titles may come once the import is done


def test_pid_file_only_names_the_app_from_the_master(proc, tmp_path, dd_run_check, aggregator):
    titled_app(proc, 100, name='shop')
    (tmp_path / 'shop.pid').write_text('100\n')
    check = make({'pid_file': str(tmp_path / 'shop.pid')})
    run(check, dd_run_check, aggregator)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['app:shop'])
    # The master dies: the CRITICAL keeps the app tag it was known by.
    proc.remove(100)
    run(check, dd_run_check, aggregator)
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.CRITICAL, tags=['app:shop'], message=r'pid file .* is stale: pid 100 is not'
    )


def test_a_stale_pid_file_with_a_proc_name_warns_and_uses_the_name(proc, tmp_path, dd_run_check, aggregator):
    titled_app(proc, 100)
    (tmp_path / 'web.pid').write_text('4242\n')
    check = make({'proc_name': 'web', 'pid_file': str(tmp_path / 'web.pid')})
    run(check, dd_run_check, aggregator)
    assert worker_gauges(aggregator) == {'working': 0, 'idle': 2}
    assert any('pid 4242 is not running' in w and 'found by proc_name web instead' in w for w in check.warnings)


def test_a_misspelled_name_gets_the_closest_one(proc, dd_run_check, aggregator):
    titled_app(proc, 100, name='shopfront')
    untitled_app(proc, 200, name='billing')
    check = make({'proc_name': 'shopfrnt'})
    assert run(check, dd_run_check, aggregator) == {}
    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        tags=['app:shopfrnt'],
        message=r'No gunicorn process with name shopfrnt found.*Did you mean `shopfront`\?.*--proc-name shopfrnt',
    )


def test_a_wrong_procfs_path_is_explained(tmp_path, datadog_agent, dd_run_check, aggregator):
    datadog_agent._config['procfs_path'] = str(tmp_path / 'host' / 'proc')
    check = make({'proc_name': 'web'})
    assert run(check, dd_run_check, aggregator) == {}
    aggregator.assert_service_check(
        'gunicorn.is_running',
        AgentCheck.CRITICAL,
        message=r'The process table cannot be listed \(.*/host/proc: No such file or directory\): set the Agent',
    )


# app_autodiscovery: one instance for every application on the host


def node_wide(**options):
    return make({'app_autodiscovery': {'enabled': True, **options}, 'tags': ['team:a']})


def apps_reported(aggregator) -> dict[str, int]:
    """Workers per app tag, summed over states and containers."""
    total: dict[str, int] = {}
    for metric in aggregator.metrics('gunicorn.workers'):
        app = next(t for t in metric.tags if t.startswith('app:'))
        total[app] = total.get(app, 0) + int(metric.value)
    return total


def test_node_wide_reports_every_app_under_its_own_tag(proc, dd_run_check, aggregator):
    titled_app(proc, 100, name='shop', workers=2)
    titled_app(proc, 200, name='billing', workers=3)
    untitled_app(proc, 300, name='search', workers=1)
    check = node_wide()
    run(check, dd_run_check, aggregator)
    assert apps_reported(aggregator) == {'app:shop': 2, 'app:billing': 3, 'app:search': 1}
    for app in ('shop', 'billing', 'search'):
        aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['team:a', 'app:%s' % app])
    # The untitled app gets the single-app warning, naming it.
    assert len(check.warnings) == 1 and 'of search runs without process titles' in check.warnings[0]
    for metric in aggregator.metrics('gunicorn.workers'):
        assert not any(t.startswith(('pid:', 'cmdline:', 'command:')) for t in metric.tags)


def test_node_wide_replicas_in_containers_stay_apart(proc, dd_run_check, aggregator):
    titled_app(proc, 100, workers=2, container=WEB1)
    titled_app(proc, 200, workers=3, container=WEB2)
    tagger.set_tags({'container_id://%s' % WEB1: ['pod_name:web-1'], 'container_id://%s' % WEB2: ['pod_name:web-2']})
    gauges = run(node_wide(), dd_run_check, aggregator)
    assert gauges[(('app:web', 'pod_name:web-1', 'team:a'), 'state:idle')] == 2
    assert gauges[(('app:web', 'pod_name:web-2', 'team:a'), 'state:idle')] == 3


def test_node_wide_an_app_that_goes_is_not_an_outage_but_no_workers_is(proc, dd_run_check, aggregator):
    titled_app(proc, 100, name='shop', workers=2)
    titled_app(proc, 200, name='billing', workers=0)
    check = node_wide()
    run(check, dd_run_check, aggregator)
    aggregator.assert_service_check('gunicorn.is_running', AgentCheck.OK, tags=['team:a', 'app:shop'])
    aggregator.assert_service_check(
        'gunicorn.is_running', AgentCheck.CRITICAL, tags=['team:a', 'app:billing'], message='has no workers'
    )
    for pid in (100, 101, 102, 200):
        proc.remove(pid)
    assert run(check, dd_run_check, aggregator) == {}
    assert aggregator.service_checks('gunicorn.is_running') == []
    assert check.warnings == []


def test_node_wide_past_max_apps_a_warning_names_how_many_were_left_out(proc, dd_run_check, aggregator):
    for n, app in enumerate(['a', 'b', 'c', 'd']):
        titled_app(proc, 100 * (n + 1), name=app, workers=1)
    check = node_wide(max_apps=2, exclude=['d'])
    run(check, dd_run_check, aggregator)
    assert apps_reported(aggregator) == {'app:a': 1, 'app:b': 1}
    assert len(check.warnings) == 1
    assert (
        '1 Gunicorn application(s)' in check.warnings[0] and 'app_autodiscovery.max_apps (2): c.' in check.warnings[0]
    )


@pytest.mark.parametrize('option', [{'proc_name': 'web'}, {'pid_file': '/run/web.pid'}, {'bind': ['127.0.0.1:8000']}])
def test_node_wide_refuses_the_options_of_one_app(option, dd_run_check):
    check = GunicornCheck('gunicorn', {}, [{'app_autodiscovery': {'enabled': True}, **option}])
    with pytest.raises(Exception, match='ConfigurationError') as info:
        dd_run_check(check)
    name = next(iter(option))
    assert '`%s` cannot be set beside `app_autodiscovery`' % name in str(info.value)


@pytest.mark.parametrize(
    'autodiscovery, hint',
    [
        ({'enabled': True, 'include': ['(']}, 'app_autodiscovery.include'),
        ({'enabled': True, 'exclude': ['[a']}, 'app_autodiscovery.exclude'),
        ({'enabled': True, 'max_apps': 0}, 'app_autodiscovery.max_apps'),
        ({'enabled': 'yes'}, 'app_autodiscovery.enabled'),
    ],
)
def test_node_wide_bad_options_name_the_option(autodiscovery, hint, dd_run_check):
    check = GunicornCheck('gunicorn', {}, [{'app_autodiscovery': autodiscovery}])
    with pytest.raises(Exception, match='ConfigurationError') as info:
        dd_run_check(check)
    assert hint in str(info.value)


def test_node_wide_a_usr2_upgrade_is_one_app_as_in_single_app_mode(proc, dd_run_check, aggregator):
    proc.add(100, 1, 'gunicorn: master [web]', children=(101, 102))
    proc.add(101, 100, 'gunicorn: worker [web]')
    proc.add(102, 100, 'gunicorn: master [web.2]', children=(103,))
    proc.add(103, 102, 'gunicorn: worker [web.2]')
    check = node_wide()
    run(check, dd_run_check, aggregator)
    assert apps_reported(aggregator) == {'app:web': 2}  # both masters' workers serve traffic; one app, not two
    # The old master exits; the new one, re-parented, still shows `web.2` until it renames itself.
    proc.remove(100)
    proc.remove(101)
    proc.set_stat(102, ppid=1, comm='gunicorn: maste')
    run(check, dd_run_check, aggregator)
    assert apps_reported(aggregator) == {'app:web': 1}
