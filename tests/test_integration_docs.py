"""The RUN_HERE commands of tests/test_unit_docs.py, run as README.md and CONTRIBUTING.md write them.

Each test takes its command from the docs (tests/documented.py), so a changed command is run as changed. `python`,
`python3`, the Agent's Python and `.tox/<env>/bin/python` mean this test's interpreter; `sudo -u dd-agent` is
dropped (the tests run as their own user); placeholders and paths of an Agent host are substituted as SUBSTITUTED in
tests/test_unit_docs.py lists. Commands that build or rewrite files run in a copy of the repository's tracked files,
as a fresh clone has them.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .documented import REPO, argv_for, documented, documented_all

pytestmark = pytest.mark.integration


def run(argv: list[str], cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def copy_of_the_repository(destination: Path) -> Path:
    """The tracked files of the repository (with their working-tree content) under `destination`: what a fresh clone
    holds, without .cache, .tox, dist, build or *.egg-info, which setuptools and the scripts would otherwise reuse."""
    listed = run(['git', 'ls-files', '-z'])
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split('\0')):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not there
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def assert_one_line_without_traceback(done: subprocess.CompletedProcess, *words: str) -> None:
    assert 'Traceback' not in done.stdout + done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines


def assert_quickstart_output(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # What the Agent would receive: the worker gauge and the service check, from two runs.
    assert '"metric": "gunicorn.workers"' in out and '"check": "gunicorn.is_running"' in out
    assert 'Total Runs: 2' in out and '==> Gunicorn stopped' in out


# python3 scripts/dev.py quickstart


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 13),
    reason="run once per CI run, under the Agent's Python 3.13: it installs the check into .cache/quickstart (about "
    '30 s on a clean clone, 8 s once installed); the demo it starts runs under every Python',
)
def test_quickstart_as_written():
    # In the repository itself, as the README says: the virtualenv stays in .cache/quickstart for the next run.
    done = run(argv_for(documented('python3 scripts/dev.py quickstart')), timeout=900)
    assert_quickstart_output(done)
    # The README's Validation section gives this virtualenv's Python as the `python` of a clone.
    python = REPO / '.cache' / 'quickstart' / 'check' / 'bin' / 'python'
    assert python.relative_to(REPO).as_posix() in (REPO / 'README.md').read_text()
    assert run([str(python), '-m', 'datadog_checks.gunicorn', '--help']).returncode == 0


def test_quickstart_demo_with_this_python():
    """What `dev.py quickstart` runs once its virtualenv is ready, run the same way with this interpreter."""
    done = run([sys.executable, str(REPO / 'scripts' / 'quickstart_demo.py')], timeout=300)
    assert_quickstart_output(done)


# python3 -m pip wheel --no-deps -w dist .


def test_pip_wheel_builds_the_wheel_the_readme_installs(tmp_path):
    tree = copy_of_the_repository(tmp_path / 'clone')
    done = run(argv_for(documented('python3 -m pip wheel')), cwd=tree, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    install = shlex.split(documented('sudo -u dd-agent datadog-agent integration install'))
    wheel = install[install.index('--local-wheel') + 1]
    assert [p.relative_to(tree).as_posix() for p in (tree / 'dist').iterdir()] == [wheel]


# .tox/py313/bin/python scripts/sync_config.py --write


def generated_files(root: Path) -> dict[str, bytes]:
    package = root / 'datadog_checks' / 'gunicorn'
    paths = [package / 'data' / 'conf.yaml.example', *sorted((package / 'config_models').glob('*.py'))]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}


def test_sync_config_write_leaves_the_generated_files_as_they_are(tmp_path):
    tree = copy_of_the_repository(tmp_path / 'clone')
    done = run(argv_for(documented('.tox/py313/bin/python scripts/sync_config.py')), cwd=tree)
    assert done.returncode == 0, done.stdout + done.stderr
    # It prints `wrote <file>` for each file it rewrote: none, since the repository is in sync with its spec.
    assert 'wrote' not in done.stdout
    assert generated_files(tree) == generated_files(REPO)


# python3 scripts/dev.py test -e ENV -- PYTEST ARGS


def pytest_selections() -> list[list[str]]:
    selections = []
    for command in documented_all('python3 scripts/dev.py test -e'):
        argv = shlex.split(command)
        if '--' in argv:
            selections.append(argv[argv.index('--') + 1 :])
    return selections


@pytest.mark.parametrize('selection', pytest_selections(), ids=' '.join)
def test_the_pytest_selection_after_double_dash_selects_tests(selection):
    """What tox hands pytest, collected (not run: tox is not nested inside tox) with this interpreter."""
    done = run([sys.executable, '-m', 'pytest', *selection, '-q', '--collect-only', '-p', 'no:cacheprovider'])
    assert done.returncode == 0, done.stdout + done.stderr
    selected = [line for line in done.stdout.splitlines() if '::' in line]
    assert selected, done.stdout
    if selection == ['-m', 'not integration']:
        # Every test_integration_* file is marked `integration`; the unit files must be what remains.
        assert not [t for t in selected if '/test_integration_' in t or t.startswith('test_integration_')]


# python -m datadog_checks.gunicorn ...


def test_the_runner_on_myapp_as_json(gunicorn):
    command = documented('python -m datadog_checks.gunicorn --proc-name')
    argv = argv_for(command)
    name = argv[argv.index('--proc-name') + 1]
    gunicorn(name=name, workers=2)
    done = run(argv)
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report['errors'] == [] and report['runs'] == 2
    workers = [s for s in report['series'] if s['metric'] == 'gunicorn.workers']
    assert {tuple(s['tags']) for s in workers} == {('app:%s' % name, 'state:idle'), ('app:%s' % name, 'state:working')}
    # At least this test's two workers: another `myapp` on the host would be counted too, as the README says.
    assert sum(s['points'][-1][1] for s in workers) >= 2
    assert [sc['status'] for sc in report['service_checks']] == [0]


AGENT_CONF = '/etc/datadog-agent/conf.d/gunicorn.d/conf.yaml'


def test_the_runner_on_a_conf_yaml(gunicorn, tmp_path):
    server = gunicorn(workers=2)
    conf = tmp_path / 'conf.yaml'
    conf.write_text(
        yaml.safe_dump(
            {
                'init_config': {'gunicorn': str(server.venv / 'bin' / 'gunicorn')},
                'instances': [{'proc_name': server.name}],
            }
        )
    )
    done = run(argv_for(documented('python -m datadog_checks.gunicorn --conf'), {AGENT_CONF: str(conf)}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'Configuration Source: file:%s' % conf in done.stdout and '[OK]' in done.stdout
    assert '"metric": "gunicorn.workers"' in done.stdout


def test_the_runner_on_the_agents_conf_yaml_as_written():
    if Path(AGENT_CONF).exists():
        pytest.skip('this host has an Agent configuration at %s' % AGENT_CONF)
    done = run(argv_for(documented('python -m datadog_checks.gunicorn --conf')))
    # The README: exit 2 when the configuration cannot be used, with one line naming the file and the problem.
    assert done.returncode == 2
    assert_one_line_without_traceback(done, AGENT_CONF, 'no such file')


# sudo -u dd-agent /opt/datadog-agent/embedded/bin/python -m datadog_checks.gunicorn diagnose ...

DIAGNOSE = 'sudo -u dd-agent /opt/datadog-agent/embedded/bin/python -m datadog_checks.gunicorn diagnose'


def test_diagnose_by_name(gunicorn):
    server = gunicorn(workers=2)  # a name of its own (gtest-...) for <NAME>
    done = run(argv_for(documented(DIAGNOSE + ' --proc-name'), {'<NAME>': server.name}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'proc_name %s: found master %d.' % (server.name, server.master_pid) in done.stdout


def test_diagnose_by_pid_file(gunicorn, tmp_path):
    pid_file = tmp_path / 'app.pid'
    server = gunicorn(workers=2, args=['--pid', str(pid_file)])
    substitutions = {'/run/gunicorn/app.pid': str(pid_file), '/host/proc': '/proc'}
    done = run(argv_for(documented(DIAGNOSE + ' --pid-file'), substitutions))
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'pid file %s: names master %d.' % (pid_file, server.master_pid) in done.stdout


def test_diagnose_by_pid_file_as_written():
    if Path('/host/proc').exists():
        pytest.skip('this host has a /host/proc')
    done = run(argv_for(documented(DIAGNOSE + ' --pid-file')))
    # Outside an Agent container there is no /host/proc: diagnose says so and what to do, and fails.
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert 'No process table at /host/proc' in done.stdout
