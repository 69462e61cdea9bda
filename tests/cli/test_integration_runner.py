"""`python -m datadog_checks.gunicorn`: the check run from a conf.yaml, printed as the Agent would receive it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from datadog_checks.gunicorn.base_compat import dump_yaml

from ..gunicorn_env import REPO

pytestmark = [pytest.mark.integration, pytest.mark.every_agent]


def runner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'datadog_checks.gunicorn', *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_conf_yaml_runs_every_instance_and_prints_the_agent_layout(gunicorn, tmp_path):
    server = gunicorn(workers=2)
    conf = tmp_path / 'conf.yaml'
    conf.write_text(
        dump_yaml(
            {
                'init_config': {'gunicorn': str(server.venv / 'bin' / 'gunicorn')},
                'instances': [{'proc_name': server.name, 'tags': ['team:web']}, {'proc_name': 'absent-app'}],
            }
        )
    )
    done = runner('--conf', str(conf), '--times', '2', '--pause', '0.1')
    assert done.returncode == 3, done.stderr  # every run went through, and absent-app found no master
    out = done.stdout
    assert '=== Series ===' in out and '=== Service Checks ===' in out
    assert 'Total Runs: 2' in out
    # Besides the two worker gauges the check sends resources per role, some only from the second run on (rates).
    last, total = map(int, re.search(r'Metric Samples: Last Run: (\d+), Total: (\d+)', out).groups())
    assert last > 2 and last < total <= 2 * last
    assert 'version.raw: %s' % server.version in out
    assert 'Warning: No gunicorn process with name absent-app found' in out
    assert 'Configuration Source: file:%s' % conf in out


def test_json_output(gunicorn):
    server = gunicorn(workers=3)
    done = runner('--proc-name', server.name, '--json')
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)
    values = {tuple(s['tags']): s['points'][0][1] for s in report['series'] if s['metric'] == 'gunicorn.workers'}
    assert values == {('app:%s' % server.name, 'state:idle'): 3.0, ('app:%s' % server.name, 'state:working'): 0.0}
    assert [sc['status'] for sc in report['service_checks']] == [0]
    assert report['errors'] == [] and report['runs'] == 1


def test_a_configuration_error_exits_non_zero(tmp_path):
    conf = tmp_path / 'conf.yaml'
    conf.write_text('instances:\n  - proc_name: app\n    cpu_sample_interval: 3\n')
    done = runner('--conf', str(conf))
    assert (done.returncode, done.stdout) == (2, '')
    assert done.stderr.startswith('error: %s, instance 1: cpu_sample_interval must be' % conf), done.stderr
    assert done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr


def test_a_conf_without_instances_is_refused(tmp_path):
    conf = tmp_path / 'conf.yaml'
    conf.write_text('init_config:\n')
    done = runner('--conf', str(conf))
    assert done.returncode != 0 and 'instances' in done.stderr


def test_pid_file_option(gunicorn, tmp_path):
    server = gunicorn(workers=2, args=['--pid', str(tmp_path / 'app.pid')])
    done = runner('--pid-file', str(tmp_path / 'app.pid'), '--json')
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert {tuple(s['tags']) for s in report['series'] if s['metric'] == 'gunicorn.workers'} == {
        ('app:%s' % server.name, 'state:idle'),
        ('app:%s' % server.name, 'state:working'),
    }


@pytest.mark.parametrize(
    'args, error',
    [
        ((), 'one of --conf, --proc-name or --pid-file is required'),
        (('--conf', 'x.yaml', '--proc-name', 'web'), '--conf runs the instances of a file'),
    ],
)
def test_source_options(args, error):
    done = runner(*args)
    assert done.returncode == 2 and error in done.stderr


def test_diagnose_is_a_subcommand():
    done = runner('diagnose', '--help')
    assert done.returncode == 0 and '--proc-name' in done.stdout and '--pid-file' in done.stdout
