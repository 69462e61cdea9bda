"""Every command README.md and CONTRIBUTING.md show works as written: a test here runs it, or it needs what this
machine lacks and the table below says what, and which test checks what can be checked locally.

Every command of a ```shell block (tests/documented.py says what a command is) must be in exactly one table:

- RUN_HERE: a command a test of this repository runs, mapped to the tests that run it. The runs that start Gunicorn
  are in tests/test_integration_docs.py; the ones here start nothing.
- NOT_HERE: a command that needs a Datadog Agent install, a Docker engine, a Kubernetes cluster or a Datadog account
  (or, once, more processes than CI should start), with that reason and the tests that check its parts locally.

Placeholders (`<NAME>`) are allowed in NOT_HERE commands only, or when SUBSTITUTED says what the test that runs the
command puts in their place. This file starts no Gunicorn.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace

import dockerfile
import pytest
import yaml

from datadog_checks.gunicorn import cli
from datadog_checks.gunicorn.cli import diagnose, runner
from datadog_checks.gunicorn.cli.assets import api, command
from datadog_checks.gunicorn.configuration import MINIMUM_BASE

from .documented import REPO, documented_all, documented_commands, placeholders, without_sudo

ABOUT: dict[str, str] = {}
exec((REPO / 'datadog_checks' / 'gunicorn' / '__about__.py').read_text(), ABOUT)
VERSION = ABOUT['__version__']

INTEGRATION = 'tests/test_integration_docs.py'
UNIT = 'tests/test_unit_docs.py'
DEV_PY_PASSES_ARGUMENTS = UNIT + '::test_dev_py_test_passes_its_arguments_to_tox_unchanged'
MODULE_ARGUMENTS = UNIT + '::test_module_arguments_parse_with_the_checks_own_parsers'

# Commands a test runs, and the tests (or `.ci/run`, which CI runs) that run them.
RUN_HERE: dict[str, tuple[str, ...]] = {
    # dev.py quickstart creates a virtualenv and pip-installs the check: about 30 s on a clean clone (where the
    # Gunicorn virtualenvs already exist), 8 s once installed. It runs under Python 3.13 only, once per CI run; the
    # demo it starts runs under both Pythons.
    'python3 scripts/dev.py quickstart': (
        INTEGRATION + '::test_quickstart_as_written',
        INTEGRATION + '::test_quickstart_demo_with_this_python',
    ),
    # CI's whole job; a test cannot run tox inside tox, so the argument passing is tested instead.
    'python3 scripts/dev.py test': ('.ci/run', DEV_PY_PASSES_ARGUMENTS),
    'python3 scripts/dev.py test -e lint': (DEV_PY_PASSES_ARGUMENTS, UNIT + '::test_the_tox_environments_exist'),
    'python3 scripts/dev.py test -e agent751 -- tests/collectors/test_unit_discovery.py -k upgrade': (
        DEV_PY_PASSES_ARGUMENTS,
        INTEGRATION + '::test_the_pytest_selection_after_double_dash_selects_tests',
    ),
    'python3 scripts/dev.py test -e py313 -- -m "not integration"': (
        DEV_PY_PASSES_ARGUMENTS,
        INTEGRATION + '::test_the_pytest_selection_after_double_dash_selects_tests',
    ),
    'python3 scripts/dev.py test -e bench': (DEV_PY_PASSES_ARGUMENTS, UNIT + '::test_the_tox_environments_exist'),
    'python3 -m pip wheel --no-deps -w dist .': (
        INTEGRATION + '::test_pip_wheel_builds_the_wheel_the_readme_installs',
    ),
    'python -m datadog_checks.gunicorn --conf /etc/datadog-agent/conf.d/gunicorn.d/conf.yaml': (
        INTEGRATION + '::test_the_runner_on_a_conf_yaml',
        INTEGRATION + '::test_the_runner_on_the_agents_conf_yaml_as_written',
    ),
    'python -m datadog_checks.gunicorn --proc-name myapp --times 2 --pause 1 --json': (
        INTEGRATION + '::test_the_runner_on_myapp_as_json',
    ),
    'sudo -u dd-agent /opt/datadog-agent/embedded/bin/python -m datadog_checks.gunicorn diagnose --proc-name <NAME>': (
        INTEGRATION + '::test_diagnose_by_name',
    ),
    'sudo -u dd-agent /opt/datadog-agent/embedded/bin/python -m datadog_checks.gunicorn diagnose '
    '--pid-file /run/gunicorn/app.pid --procfs-path /host/proc': (
        INTEGRATION + '::test_diagnose_by_pid_file',
        INTEGRATION + '::test_diagnose_by_pid_file_as_written',
    ),
    '.tox/py313/bin/python scripts/sync_config.py --write': (
        INTEGRATION + '::test_sync_config_write_leaves_the_generated_files_as_they_are',
    ),
}

# What the tests that run a RUN_HERE command put in place of a placeholder or of a path of an Agent host. Besides
# these, every runner drops `sudo -u dd-agent` (the tests run as their own user) and runs `python`, `python3`, the
# Agent's Python and `.tox/<env>/bin/python` with the test's own interpreter (tests/documented.py, argv_for).
SUBSTITUTED = {
    '<NAME>': 'the name of a Gunicorn the test started',
    '/etc/datadog-agent/conf.d/gunicorn.d/conf.yaml': 'a conf.yaml naming a Gunicorn the test started (also run '
    'as written: no such file here, exit 2)',
    '/run/gunicorn/app.pid': 'the --pid file of a Gunicorn the test started',
    '/host/proc': "/proc: the host's /proc as seen outside a container (also run as written: exit 1, one reason)",
}


@dataclass(frozen=True)
class NotHere:
    needs: str  # what this machine lacks
    checked_by: tuple[str, ...]  # the tests that check what can be checked here


AGENT = 'a Datadog Agent installed on this host'
DOCKER = 'a Docker engine'
KUBERNETES = 'a Kubernetes cluster'
ACCOUNT = 'a Datadog account and its keys'
IMAGE_CHECK = UNIT + '::test_the_image_commands_use_the_dockerfiles_path_and_tag'
KUBERNETES_FILES = UNIT + '::test_the_kubernetes_commands_name_files_under_deploy'
DEPLOY_TESTS = 'tests/deploy/test_unit_deploy.py'
ASSETS_E2E = 'tests/cli/test_unit_assets_cli.py::test_end_to_end_the_command_line_installs_then_updates'
ASSETS_ENV = UNIT + '::test_the_assets_commands_pass_the_variables_the_installer_reads'

NOT_HERE: dict[str, NotHere] = {
    'sudo -u dd-agent /opt/datadog-agent/embedded/bin/python -m pip show datadog-checks-base': NotHere(
        AGENT, (UNIT + '::test_pip_show_names_the_base_package_the_check_requires',)
    ),
    'sudo -u dd-agent datadog-agent integration install --local-wheel dist/datadog_gunicorn-1.0.0-py3-none-any.whl': (
        NotHere(
            AGENT,
            (
                UNIT + '::test_the_local_wheel_is_the_one_this_version_builds',
                INTEGRATION + '::test_pip_wheel_builds_the_wheel_the_readme_installs',
                'tests/test_integration_wheel.py::test_the_installed_check_reports_a_real_gunicorn',
            ),
        )
    ),
    # Nothing of it is in this repository: it restarts the service Datadog's package installs.
    'sudo systemctl restart datadog-agent': NotHere(AGENT + ' (a systemd service)', ()),
    'sudo -u dd-agent datadog-agent status': NotHere(
        AGENT, (UNIT + '::test_the_version_the_readme_says_status_shows_is_this_one',)
    ),
    'sudo -u dd-agent datadog-agent check gunicorn': NotHere(
        AGENT,
        (
            UNIT + '::test_the_check_name_is_gunicorn',
            'tests/cli/test_integration_runner.py::test_conf_yaml_runs_every_instance_and_prints_the_agent_layout',
        ),
    ),
    'docker build -f deploy/Dockerfile -t <REGISTRY>/datadog-agent-gunicorn:7.84.6-gunicorn-1.0.0 .': NotHere(
        DOCKER, (IMAGE_CHECK, DEPLOY_TESTS + '::test_the_agent_stage_installs_the_wheel_the_wheel_stage_builds')
    ),
    'docker push <REGISTRY>/datadog-agent-gunicorn:7.84.6-gunicorn-1.0.0': NotHere(
        DOCKER + ' and a registry', (IMAGE_CHECK,)
    ),
    'docker run -d --name datadog-agent --pid host --cap-add SYS_PTRACE -v /proc/:/host/proc/:ro '
    '-v /sys/fs/cgroup/:/host/sys/fs/cgroup:ro -v /var/run/docker.sock:/var/run/docker.sock:ro '
    '-e DD_API_KEY=<DATADOG_API_KEY> <REGISTRY>/datadog-agent-gunicorn:7.84.6-gunicorn-1.0.0': NotHere(
        DOCKER + ' and ' + ACCOUNT, (IMAGE_CHECK,)
    ),
    'kubectl create secret generic datadog-secret --from-literal api-key=<DATADOG_API_KEY>': NotHere(
        KUBERNETES + ' and ' + ACCOUNT, (UNIT + '::test_the_secret_the_docs_create_is_the_one_the_examples_read',)
    ),
    'helm install datadog-agent datadog/datadog -f deploy/kubernetes/helm-values.yaml '
    '-f deploy/kubernetes/helm-values-confd.yaml': NotHere(
        KUBERNETES, (KUBERNETES_FILES, DEPLOY_TESTS + '::test_helm_values_use_only_keys_the_chart_documents')
    ),
    'kubectl apply -f deploy/kubernetes/datadog-agent.yaml': NotHere(
        KUBERNETES + ' running the Datadog Operator',
        (KUBERNETES_FILES, DEPLOY_TESTS + '::test_the_datadog_agent_resource_uses_only_documented_fields'),
    ),
    'export DD_API_KEY=<DATADOG_API_KEY> DD_APP_KEY=<DATADOG_APPLICATION_KEY> DD_SITE=datadoghq.eu': NotHere(
        ACCOUNT, (ASSETS_ENV,)
    ),
    'sudo -u dd-agent --preserve-env=DD_API_KEY,DD_APP_KEY,DD_SITE /opt/datadog-agent/embedded/bin/python '
    '-m datadog_checks.gunicorn assets install --dry-run': NotHere(
        AGENT + ' and ' + ACCOUNT,
        (
            ASSETS_ENV,
            MODULE_ARGUMENTS,
            'tests/cli/test_unit_assets_cli.py::test_dry_run_sends_no_write_and_says_what_it_would_do',
            ASSETS_E2E,
        ),
    ),
    'sudo -u dd-agent --preserve-env=DD_API_KEY,DD_APP_KEY,DD_SITE /opt/datadog-agent/embedded/bin/python '
    '-m datadog_checks.gunicorn assets install': NotHere(
        AGENT + ' and ' + ACCOUNT, (ASSETS_ENV, MODULE_ARGUMENTS, ASSETS_E2E)
    ),
    # Not a missing capability but a cost: 2,000 idle processes and 30 runs per cell take minutes. The bench tox
    # environment runs the same script with --short on every CI run.
    '.tox/bench/bin/python scripts/benchmark.py --workers 16 --procs 2000 --runs 30': NotHere(
        'more processes and minutes than CI should spend',
        (UNIT + '::test_the_benchmark_command_parses_with_its_parser',),
    ),
}


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location('docs_%s' % name, REPO / 'scripts' / ('%s.py' % name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def defines_test(test_id: str) -> bool:
    """Whether `path::function` names a test function of that file, or `path` alone a file (`.ci/run`)."""
    path, _, function = test_id.partition('::')
    if not (REPO / path).is_file():
        return False
    if not function:
        return True
    tree = ast.parse((REPO / path).read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body)


# The tables against the docs


def test_every_documented_command_is_run_here_or_said_why_not():
    unclassified = [c for c in documented_commands() if c not in RUN_HERE and c not in NOT_HERE]
    assert not unclassified, (
        'the docs show commands no table of tests/test_unit_docs.py knows: add each to RUN_HERE with the test that '
        'runs it, or to NOT_HERE with what it needs and the tests that check it locally:\n  %s'
        % '\n  '.join(unclassified)
    )


def test_no_command_is_in_both_tables():
    assert not set(RUN_HERE) & set(NOT_HERE)


def test_the_tables_hold_only_commands_the_docs_show():
    documented = documented_commands()
    stale = [c for c in (*RUN_HERE, *NOT_HERE) if c not in documented]
    assert not stale, 'no longer in README.md or CONTRIBUTING.md; remove from the tables:\n  %s' % '\n  '.join(stale)


def test_every_test_the_tables_name_exists():
    named = [t for tests in RUN_HERE.values() for t in tests]
    named += [t for entry in NOT_HERE.values() for t in entry.checked_by]
    missing = sorted({t for t in named if not defines_test(t)})
    assert not missing, 'the tables name tests that do not exist: %s' % missing
    assert all(RUN_HERE.values()), 'a RUN_HERE command must name the test that runs it'


def test_placeholders_are_only_in_commands_not_run_here_or_substituted():
    for documented in RUN_HERE:
        unknown = placeholders(documented) - set(SUBSTITUTED)
        assert not unknown, '%r runs here: its test must substitute %s (list it in SUBSTITUTED)' % (documented, unknown)


def test_ci_runs_exactly_the_documented_test_command():
    lines = [line for line in (REPO / '.ci' / 'run').read_text().splitlines() if not line.startswith('#')]
    assert lines[-1] == 'exec python3 scripts/dev.py test'


# Commands run here, in part


@pytest.mark.parametrize('documented', documented_all('python3 scripts/dev.py test'))
def test_dev_py_test_passes_its_arguments_to_tox_unchanged(documented, monkeypatch):
    """Everything after `test` reaches tox as written (tox then gives what follows `--` to pytest)."""
    dev = load_script('dev')
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs))
        return SimpleNamespace(returncode=0)

    # No virtualenv, no interpreter search, no tox: only what dev.py would run.
    monkeypatch.setattr(dev, '_venv', lambda path, *requirements: Path('/tools/bin/python'))
    monkeypatch.setattr(dev, '_find_python', lambda version: '/pythons/%s/bin/python%s' % (version, version))
    monkeypatch.setattr(dev, 'subprocess', SimpleNamespace(run=run))
    argv = shlex.split(documented)
    monkeypatch.setattr(dev.sys, 'argv', argv[1:])
    assert dev.main() == 0
    ((tox, kwargs),) = calls
    assert tox == ['/tools/bin/python', '-m', 'tox', 'run', '--root', str(dev.ROOT), *argv[3:]]
    assert kwargs['cwd'] == dev.ROOT
    assert kwargs['env']['PATH'].startswith('/pythons/3.11/bin:/pythons/3.13/bin:')


def test_the_tox_environments_exist():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / 'tox.ini')
    envlist = {env.strip() for env in tox['tox']['envlist'].split(',')}
    for documented in documented_all('python3 scripts/dev.py test -e'):
        env = shlex.split(documented)[4]
        assert env in envlist, '%r names tox environment %s, which tox.ini does not list' % (documented, env)
    # CONTRIBUTING's bench command runs the short benchmark (and the soak), not the long one it shows next.
    assert 'python scripts/benchmark.py --short' in tox['testenv:bench']['commands']


def parsed_by_the_check(module_args: list[str], monkeypatch) -> tuple[str, object]:
    """Hand `module_args` to the real dispatcher (`python -m datadog_checks.gunicorn`) with each tool's main()
    replaced by its own parser: which tool took them, and what its parser made of them."""
    seen = {}

    def parse_only(tool: str, build_parser):
        def main(argv=None, *_):
            seen[tool] = build_parser().parse_args(argv)
            return 0

        return main

    monkeypatch.setattr(runner, 'main', parse_only('runner', runner.build_parser))
    monkeypatch.setattr(diagnose, 'main', parse_only('diagnose', diagnose.build_parser))
    monkeypatch.setattr(command, 'main', parse_only('assets', command.build_parser))
    try:
        assert cli.main(module_args) == 0
    except SystemExit as exc:  # argparse's way of refusing arguments
        pytest.fail('the check refuses %s (exit %s)' % (module_args, exc.code))
    ((tool, args),) = seen.items()
    return tool, args


def check_module_commands() -> list[str]:
    return [c for c in documented_commands() if '-m datadog_checks.gunicorn' in c]


@pytest.mark.parametrize('documented', check_module_commands())
def test_module_arguments_parse_with_the_checks_own_parsers(documented, monkeypatch):
    argv = without_sudo(shlex.split(documented))
    module_args = argv[argv.index('datadog_checks.gunicorn') + 1 :]
    tool, args = parsed_by_the_check(module_args, monkeypatch)
    assert tool == (module_args[0] if module_args[0] in ('diagnose', 'assets') else 'runner')
    if tool == 'assets':
        assert args.command == 'install' and args.dry_run == ('--dry-run' in module_args)


def test_the_benchmark_command_parses_with_its_parser():
    (documented,) = documented_all('.tox/bench/bin/python scripts/benchmark.py')
    benchmark = load_script('benchmark')
    plan = benchmark.plan_of(benchmark.build_parser().parse_args(shlex.split(documented)[2:]))
    assert (plan['workers'], plan['procs'], plan['runs']) == ((16,), (2000,), 30)


# Commands not run here: what can be checked of them


def test_pip_show_names_the_base_package_the_check_requires():
    (documented,) = documented_all('sudo -u dd-agent /opt/datadog-agent/embedded/bin/python -m pip show')
    package = shlex.split(documented)[-1]
    dependencies = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['dependencies']
    assert dependencies == ['%s>=%s' % (package, MINIMUM_BASE)]
    # The README tells what to look for in that output.
    assert '`datadog-checks-base` is %s or later' % MINIMUM_BASE in (REPO / 'README.md').read_text()


def test_the_local_wheel_is_the_one_this_version_builds():
    (documented,) = documented_all('sudo -u dd-agent datadog-agent integration install')
    (build,) = documented_all('python3 -m pip wheel')
    wheel = Path(shlex.split(documented)[-1])
    name = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['name']
    # Wheel file names use the project name with - as _ (PEP 427); the check is pure Python.
    assert wheel.name == '%s-%s-py3-none-any.whl' % (name.replace('-', '_'), VERSION)
    build_argv = shlex.split(build)
    assert str(wheel.parent) == build_argv[build_argv.index('-w') + 1]


def test_the_version_the_readme_says_status_shows_is_this_one():
    readme = (REPO / 'README.md').read_text()
    said = re.findall(r"this check's version \((\d[\d.]*)\)|this check's,\s+(\d[\d.]*)", readme)
    assert said and {a or b for a, b in said} == {VERSION}


def test_the_check_name_is_gunicorn():
    (documented,) = documented_all('sudo -u dd-agent datadog-agent check')
    name = shlex.split(documented)[-1]
    # The Agent names a Python check after its package under datadog_checks/ and reads conf.d/<name>.d/.
    assert (REPO / 'datadog_checks' / name / 'data' / 'conf.yaml.example').is_file()
    manifest = json.loads((REPO / 'manifest.json').read_text())
    assert manifest['assets']['integration']['source_type_name'].lower() == name


def dockerfile_image() -> tuple[str, str, str]:
    """The image name and tag deploy/Dockerfile labels its image with (ARG defaults expanded), and its Agent tag."""
    args: dict[str, str] = {}
    labels: dict[str, str] = {}
    for instruction in dockerfile.parse_file(str(REPO / 'deploy' / 'Dockerfile')):
        if instruction.cmd == 'ARG':
            args.update(v.split('=', 1) for v in instruction.value if '=' in v)
        elif instruction.cmd == 'LABEL':
            labels.update(zip(instruction.value[::2], instruction.value[1::2], strict=True))
    version = labels['org.opencontainers.image.version'].strip('"').replace('${AGENT_TAG}', args['AGENT_TAG'])
    return labels['org.opencontainers.image.title'].strip('"'), version, args['AGENT_TAG']


def test_the_image_commands_use_the_dockerfiles_path_and_tag():
    title, version, agent_tag = dockerfile_image()
    assert version == '%s-gunicorn-%s' % (agent_tag, VERSION)
    image = '<REGISTRY>/%s:%s' % (title, version)
    (build,) = documented_all('docker build')
    argv = shlex.split(build)
    assert argv[argv.index('-f') + 1] == 'deploy/Dockerfile' and (REPO / 'deploy' / 'Dockerfile').is_file()
    assert argv[argv.index('-t') + 1] == image
    # The build context is the repository root: the wheel stage copies it whole.
    assert argv[-1] == '.'
    for documented in (*documented_all('docker push'), *documented_all('docker run')):
        assert shlex.split(documented)[-1] == image, documented


def test_the_secret_the_docs_create_is_the_one_the_examples_read():
    (documented,) = documented_all('kubectl create secret')
    argv = shlex.split(documented)
    secret = argv[argv.index('generic') + 1]
    key = argv[argv.index('--from-literal') + 1].split('=', 1)[0]
    helm = yaml.safe_load((REPO / 'deploy' / 'kubernetes' / 'helm-values.yaml').read_text())
    # The chart reads the key `api-key` of the secret it is given (datadog.apiKeyExistingSecret).
    assert (helm['datadog']['apiKeyExistingSecret'], key) == (secret, 'api-key')
    operator = yaml.safe_load((REPO / 'deploy' / 'kubernetes' / 'datadog-agent.yaml').read_text())
    assert operator['spec']['global']['credentials']['apiSecret'] == {'secretName': secret, 'keyName': key}


def test_the_kubernetes_commands_name_files_under_deploy():
    for documented in (*documented_all('helm install'), *documented_all('kubectl apply')):
        argv = shlex.split(documented)
        files = [argv[i + 1] for i, word in enumerate(argv) if word == '-f']
        assert files, documented
        for name in files:
            assert name.startswith('deploy/kubernetes/') and (REPO / name).is_file(), name
    (apply,) = documented_all('kubectl apply')
    resource = yaml.safe_load((REPO / shlex.split(apply)[-1]).read_text())
    assert resource['kind'] == 'DatadogAgent'


def test_the_assets_commands_pass_the_variables_the_installer_reads():
    (export,) = documented_all('export ')
    exported = dict(word.split('=', 1) for word in shlex.split(export)[1:])
    assert set(exported) == {'DD_API_KEY', 'DD_APP_KEY', 'DD_SITE'}
    assert exported['DD_SITE'] in api.SITES
    for documented in documented_all('sudo -u dd-agent --preserve-env='):
        # sudo resets the environment: the variables the installer reads must be kept by name.
        kept = shlex.split(documented)[3].split('=', 1)[1].split(',')
        assert set(kept) == set(exported), documented
