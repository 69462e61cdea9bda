"""The check as the Agent installs it: a wheel, installed without dependencies into a Python that has only what the
Agent's embedded Python has, then run from the installed package against a real Gunicorn.

`datadog-agent integration install -w WHEEL` refuses a wheel that does not require datadog-checks-base, runs
`pip install --no-deps --no-index` with the Agent's Python, and copies `datadog_checks/<check>/data/*.yaml*` into
`conf.d/<check>.d/`. These tests do the same outside an Agent, from a directory outside the repository so that the
source tree cannot be imported by accident.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from datadog_checks.gunicorn.base_compat import dump_yaml

from .gunicorn_env import REPO, cached_venv

pytestmark = [pytest.mark.integration, pytest.mark.every_agent]

CHECK_METRIC = json.loads((REPO / 'manifest.json').read_text())['assets']['integration']['metrics']['check']
# What the Agent's embedded Python ships that the check relies on: the base package with its dependencies, and psutil.
# The base is the one this test environment runs on (tox.ini): each Agent's environment installs the wheel into a
# Python holding that Agent's base, as `integration install` does in that Agent.
BASE_PIN = 'datadog-checks-base[deps]==%s' % metadata.version('datadog-checks-base')
AGENT_PACKAGES = (BASE_PIN, 'psutil')
PACKAGE_DIR = 'datadog_checks/gunicorn'


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    # Build from a clean copy of the sources: setuptools reuses a build/ folder left in the tree, which can still hold
    # modules deleted since, and would ship them.
    tree = tmp_path_factory.mktemp('src') / 'gunicorn'
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(
            '.git', '.cache', '.tox', 'build', 'dist', '*.egg-info', '__pycache__', '.*_cache', '.benchmarks', 'tests'
        ),
    )
    dist = tmp_path_factory.mktemp('dist')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '--disable-pip-version-check', '-w', dist, tree])
    (built,) = dist.glob('datadog_gunicorn-*.whl')
    return built


@pytest.fixture(scope='module')
def agent_python(wheel) -> Path:
    """A virtualenv with the Agent's packages (created once, cached) and this wheel installed the Agent's way."""
    venv = _agent_like_venv()
    python = venv / 'bin' / 'python'
    # The Agent's own flags: nothing but the wheel may be installed or upgraded.
    _run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-deps', '--no-index',
          '--force-reinstall', wheel])  # fmt: skip
    return python


def _agent_like_venv() -> Path:
    tag = 'agent-py%d.%d-%s' % (sys.version_info[0], sys.version_info[1], BASE_PIN.split('==')[-1])
    return cached_venv(tag, list(AGENT_PACKAGES))


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, '%s\n%s%s' % (' '.join(map(str, argv)), done.stdout, done.stderr)
    return done


def _outside_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    return env


def run_installed(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), '-m', 'datadog_checks.gunicorn', *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=_outside_env(),
    )


def installed_package(python: Path, cwd: Path) -> Path:
    done = _run([python, '-c', 'import datadog_checks.gunicorn as g; print(g.__file__)'], cwd=cwd, env=_outside_env())
    return Path(done.stdout.strip()).parent


def test_the_wheel_is_one_the_agent_accepts(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith('.dist-info/METADATA')]
        metadata = archive.read(metadata_name).decode()
        example = archive.read('%s/data/conf.yaml.example' % PACKAGE_DIR)
    # The Agent installs only wheels that depend on the base package.
    assert 'Requires-Dist: datadog-checks-base' in metadata
    # The Agent copies this file into conf.d/gunicorn.d/ and users start from it.
    assert example == (REPO / PACKAGE_DIR / 'data' / 'conf.yaml.example').read_bytes()
    models = {p.relative_to(REPO).as_posix() for p in (REPO / PACKAGE_DIR / 'config_models').glob('*.py')}
    assert models and models <= names
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / PACKAGE_DIR).glob('*.py')}
    assert sources <= names
    # datadog_checks/__init__.py belongs to datadog-checks-base: shipping one would overwrite the Agent's.
    assert 'datadog_checks/__init__.py' not in names
    assert not [n for n in names if n.startswith('tests/')]


def test_the_readme_installs_what_this_test_builds(wheel):
    """The README's installation commands are the ones these tests run: same build command, same wheel file."""
    readme = (REPO / 'README.md').read_text()
    build = re.search(r'^\s*(python3 -m pip wheel .*)$', readme, re.M).group(1).split()
    assert build[1:] == ['-m', 'pip', 'wheel', '--no-deps', '-w', 'dist', '.']
    install = re.search(r'datadog-agent integration install (?:-w|--local-wheel) (\S+)', readme).group(1)
    assert install == 'dist/%s' % wheel.name


def test_the_agent_environment_satisfies_the_wheel(agent_python):
    # pip check fails when an installed distribution lacks a requirement: the wheel needs nothing the Agent lacks.
    _run([agent_python, '-m', 'pip', 'check'])


def test_the_installed_check_reports_a_real_gunicorn(agent_python, gunicorn, tmp_path):
    server = gunicorn(workers=2)
    package = installed_package(agent_python, tmp_path)
    assert agent_python.parent.parent in package.parents, package

    gunicorn_cmd = str(server.venv / 'bin' / 'gunicorn')
    done = run_installed(agent_python, tmp_path, '--proc-name', server.name, '--gunicorn', gunicorn_cmd, '--json')
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report['errors'] == [] and report['warnings'] == []
    workers = {tuple(s['tags']): s['points'][0][1] for s in report['series'] if s['metric'] == CHECK_METRIC}
    app = 'app:%s' % server.name
    assert workers == {(app, 'state:idle'): 2.0, (app, 'state:working'): 0.0}
    assert [(sc['check'], sc['status']) for sc in report['service_checks']] == [('gunicorn.is_running', 0)]
    assert report['metadata']['version.raw'] == server.version


def test_the_shipped_example_config_runs_once_filled_in(agent_python, gunicorn, tmp_path):
    """What a user does after `integration install`: fill in conf.d/gunicorn.d/conf.yaml.example and run the check."""
    server = gunicorn(workers=1)
    example = installed_package(agent_python, tmp_path) / 'data' / 'conf.yaml.example'
    conf = tmp_path / 'conf.yaml'
    conf.write_text(example.read_text().replace('<PROC_NAME>', server.name))
    assert yaml.safe_load(conf.read_text())['instances'] == [{'proc_name': server.name}]

    done = run_installed(agent_python, tmp_path, '--conf', str(conf), '--json')
    (report,) = json.loads(done.stdout)
    assert report['errors'] == [], report
    assert sum(s['points'][0][1] for s in report['series'] if s['metric'] == CHECK_METRIC) == 1.0


def test_the_installed_config_models_validate_options(agent_python, tmp_path):
    # The generated models must be in the wheel: without them a bad option would pass unnoticed.
    conf = tmp_path / 'conf.yaml'
    conf.write_text('instances:\n  - proc_name: app\n    cpu_sample_interval: 3\n')
    done = run_installed(agent_python, tmp_path, '--conf', str(conf))
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'cpu_sample_interval' in done.stderr


def test_the_installed_check_reads_a_pid_file_a_control_socket_and_its_listener(agent_python, gunicorn, tmp_path):
    """The options the Agent's base validates most (pid_file and control_socket are reserved to trusted providers from
    Agent 7.78.0 on; older Agents accept them from every provider) and the sources they open, on this base."""
    pid_file, control_socket = tmp_path / 'web.pid', tmp_path / 'web.ctl'
    server = gunicorn(workers=2, args=['--pid', str(pid_file), '--control-socket', str(control_socket)])
    conf = tmp_path / 'conf.yaml'
    instance = {'pid_file': str(pid_file), 'control_socket': str(control_socket), 'bind': server.bind}
    init_config = {'gunicorn': str(server.venv / 'bin' / 'gunicorn')}
    conf.write_text(dump_yaml({'init_config': init_config, 'instances': [instance]}))

    done = run_installed(agent_python, tmp_path, '--conf', str(conf), '--times', '2', '--pause', '0.2', '--json')
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report['errors'] == [] and report['warnings'] == [], report
    app = 'app:%s' % server.name
    series = {s['metric']: s for s in report['series']}
    assert series[CHECK_METRIC]['tags'] and app in series[CHECK_METRIC]['tags']
    # Read from the control socket (`show config`), and from the listener `bind` names.
    assert series['gunicorn.workers.target']['points'][0][1] == 2.0
    assert 'gunicorn.listen.backlog_max' in series
    assert [(sc['check'], sc['status']) for sc in report['service_checks']][-1] == ('gunicorn.is_running', 0)
