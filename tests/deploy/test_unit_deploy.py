"""deploy/: the Agent image's Dockerfile and the Kubernetes examples, checked without Docker or a cluster.

What runs here: the Dockerfile parsed by BuildKit's own parser (the `dockerfile` package wraps it); its wheel stage
replayed (the build context filtered by .dockerignore, then the stage's own `pip wheel` command) to compare the wheel it
writes with the one the Agent stage installs; every YAML file parsed; every check configuration in the examples
validated by the check's configuration models; the image the examples pull compared with the one the Dockerfile
builds; and the Helm values and DatadogAgent fields compared with the ones Datadog's chart and Operator document.

What does not run here: `docker build`, `agent integration install` inside the image, `helm template`, the Operator,
a cluster. deploy/verify_install.py is what the image build runs after the install; it is run here against this
environment's installed check.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import dockerfile
import pytest
import yaml

from datadog_checks.base import ConfigurationError
from datadog_checks.gunicorn import GunicornCheck

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / 'deploy'
DOCKERFILE = DEPLOY / 'Dockerfile'
DOCKERIGNORE = REPO / '.dockerignore'
KUBERNETES = DEPLOY / 'kubernetes'
HELM_VALUES = sorted(KUBERNETES.glob('helm-values*.yaml'))
OPERATOR_AGENT = KUBERNETES / 'datadog-agent.yaml'
APP = KUBERNETES / 'gunicorn-app.yaml'

ABOUT: dict[str, str] = {}
exec((REPO / 'datadog_checks' / 'gunicorn' / '__about__.py').read_text(), ABOUT)
VERSION = ABOUT['__version__']

AGENT_IMAGE = 'gcr.io/datadoghq/agent'
IMAGE_NAME = 'datadog-agent-gunicorn'
# integrations-core AGENT_INTEGRATIONS.md: Agent 7.51.0 ships datadog-checks-base 35.0.1, the floor pyproject.toml
# declares and the oldest the tests run on (tox -e agent751). deploy/verify_install.py checks the image's base.
MIN_AGENT = (7, 51, 0)

# Values of the datadog/datadog chart these examples may set, each read in the chart's charts/datadog/README.md values
# table (and the agent container template charts/datadog/templates/_container-agent.yaml). A key outside this set is
# a typo the chart would silently ignore. Maps whose content is free-form stop the walk.
HELM_KEYS = frozenset(
    {
        'datadog.apiKeyExistingSecret',
        'datadog.useHostPID',
        'datadog.logs.enabled',
        'datadog.logs.containerCollectAll',
        'datadog.dogstatsd.useHostPort',
        'datadog.dogstatsd.nonLocalTraffic',
        'datadog.confd',
        'agents.image.repository',
        'agents.image.tag',
        'agents.image.tagSuffix',
        'agents.containers.agent.securityContext',
    }
)
HELM_OPAQUE = frozenset({'datadog.confd', 'agents.containers.agent.securityContext'})
# DatadogAgent (datadoghq.com/v2alpha1) fields, from the Operator's docs/configuration.v2alpha1.md (`override.[key]`
# rows for the nodeAgent component, `[key].containers.[key]` for the agent container).
OPERATOR_KEYS = frozenset(
    {
        'global.credentials.apiSecret.secretName',
        'global.credentials.apiSecret.keyName',
        'features.logCollection.enabled',
        'features.logCollection.containerCollectAll',
        'features.dogstatsd.hostPortConfig.enabled',
        'features.dogstatsd.hostPortConfig.hostPort',
        'override.nodeAgent.image.name',
        'override.nodeAgent.hostPID',
        'override.nodeAgent.containers.agent.securityContext',
        'override.nodeAgent.extraConfd.configDataMap',
    }
)
OPERATOR_OPAQUE = frozenset(
    {'override.nodeAgent.containers.agent.securityContext', 'override.nodeAgent.extraConfd.configDataMap'}
)
# Where the chart and the Operator mount the node's /proc, and so the Agent's default procfs_path in a container.
HOST_PROC = '/host/proc'


# Dockerfile


def dockerfile_commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def split_stages(commands: tuple[dockerfile.Command, ...]) -> tuple[dict[str, str], list[list[dockerfile.Command]]]:
    """The ARG defaults declared before the first FROM, and the commands of each stage, FROM first."""
    global_args: dict[str, str] = {}
    stages: list[list[dockerfile.Command]] = []
    for command in commands:
        if command.cmd == 'FROM':
            stages.append([command])
        elif stages:
            stages[-1].append(command)
        elif command.cmd == 'ARG':
            global_args.update(arg_defaults(command))
    return global_args, stages


def arg_defaults(command: dockerfile.Command) -> dict[str, str]:
    return dict(value.split('=', 1) for value in command.value if '=' in value)


def stage_args(stage: list[dockerfile.Command], global_args: dict[str, str]) -> dict[str, str]:
    """ARG values visible in a stage: its own defaults, and global ones it declares again without a default."""
    args: dict[str, str] = {}
    for command in stage:
        if command.cmd != 'ARG':
            continue
        for value in command.value:
            name, _, default = value.partition('=')
            args[name] = default if default else global_args[name]
    return args


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r'\$\{(\w+)\}|\$(\w+)', lambda m: args[m.group(1) or m.group(2)], text)


def stage_name(stage: list[dockerfile.Command]) -> str | None:
    value = stage[0].value
    return value[2] if len(value) == 3 and value[1].upper() == 'AS' else None


def flag(command: dockerfile.Command, name: str) -> str | None:
    prefix = '--%s=' % name
    return next((f[len(prefix) :] for f in command.flags if f.startswith(prefix)), None)


def only(commands: list[dockerfile.Command], cmd: str) -> dockerfile.Command:
    (found,) = [c for c in commands if c.cmd == cmd]
    return found


# .dockerignore, for the forms this repository uses: `name`, `glob` (matched component by component from the context
# root) and `**/glob` (any depth). Docker excludes a directory's whole content when the directory matches.


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith('#')]


def _matches(relative: PurePosixPath, pattern: str) -> bool:
    if pattern.startswith('**/'):
        return fnmatch.fnmatchcase(relative.name, pattern[3:])
    parts = pattern.strip('/').split('/')
    return len(parts) == len(relative.parts) and all(map(fnmatch.fnmatchcase, relative.parts, parts))


def is_ignored(relative: PurePosixPath, patterns: list[str]) -> bool:
    prefixes = [PurePosixPath(*relative.parts[: i + 1]) for i in range(len(relative.parts))]
    return any(_matches(prefix, pattern) for prefix in prefixes for pattern in patterns)


def copy_context(source: Path, destination: Path, patterns: list[str]) -> None:
    """Copy `source` (a path in the build context) as the builder would receive it."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        base = PurePosixPath(Path(directory).relative_to(REPO).as_posix())
        return {n for n in names if is_ignored(base / n if base.parts else PurePosixPath(n), patterns)}

    if source.is_dir():
        shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


@pytest.fixture(scope='module')
def image() -> dict[str, Any]:
    global_args, stages = split_stages(dockerfile_commands())
    assert len(stages) == 2, 'deploy/Dockerfile must have a wheel stage and an Agent stage'
    wheel_stage, agent_stage = stages
    return {
        'global_args': global_args,
        'wheel_stage': wheel_stage,
        'agent_stage': agent_stage,
        'agent_args': stage_args(agent_stage, global_args),
    }


@pytest.fixture(scope='module')
def built_wheel(image, tmp_path_factory) -> Path:
    """Replay the wheel stage: WORKDIR, COPY from the filtered context, then its RUN with this Python for `python`."""
    root = tmp_path_factory.mktemp('builder-root')
    patterns = dockerignore_patterns()
    workdir = PurePosixPath('/')
    run = None
    for command in image['wheel_stage'][1:]:
        if command.cmd == 'WORKDIR':
            workdir = workdir / command.value[0]
        elif command.cmd == 'COPY':
            *sources, target = command.value
            for source in sources:
                destination = root / (workdir / target).relative_to('/')
                copy_context(REPO / source, destination, patterns)
        elif command.cmd == 'RUN':
            run = command
    argv = shlex.split(run.value[0])
    assert argv[:4] == ['python', '-m', 'pip', 'wheel'] and '--no-deps' in argv, run.original
    # Absolute paths of the builder's filesystem move under `root`; `python` is this test's interpreter.
    argv = [sys.executable, *(str(root / a.lstrip('/')) if a.startswith('/') else a for a in argv[1:])]
    done = subprocess.run(argv, cwd=root / workdir.relative_to('/'), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = Path(argv[argv.index('-w') + 1]).glob('*.whl')
    return wheel


def test_the_dockerfile_has_a_wheel_stage_then_an_agent_stage(image):
    wheel_stage = image['wheel_stage']
    assert stage_name(wheel_stage) == 'wheel'
    run = only(wheel_stage, 'RUN')
    assert 'pip wheel --no-deps' in run.value[0]
    copy_from = [c for c in image['agent_stage'] if c.cmd == 'COPY' and flag(c, 'from')]
    assert [flag(c, 'from') for c in copy_from] == ['wheel']


def test_the_agent_stage_starts_from_the_official_image_at_a_pinned_release(image):
    assert image['agent_stage'][0].value == ('%s:${AGENT_TAG}' % AGENT_IMAGE,)
    tag = image['global_args']['AGENT_TAG']
    assert re.fullmatch(r'7\.\d+\.\d+', tag), 'AGENT_TAG must default to a released Agent 7 version, got %r' % tag
    assert tuple(map(int, tag.split('.'))) >= MIN_AGENT


def test_every_copy_from_the_build_context_exists_and_reaches_the_builder(image):
    patterns = dockerignore_patterns()
    for stage in (image['wheel_stage'], image['agent_stage']):
        for command in stage:
            if command.cmd != 'COPY' or flag(command, 'from'):
                continue
            for source in command.value[:-1]:
                path = REPO / source
                assert path.exists(), '%s copies %s, which is not in the repository' % (command.original, source)
                relative = PurePosixPath(path.relative_to(REPO).as_posix())
                assert not relative.parts or not is_ignored(relative, patterns), '.dockerignore drops %s' % source


def test_the_dockerignore_keeps_version_control_and_caches_out_of_the_context():
    patterns = dockerignore_patterns()
    # The matcher above implements only these forms; an exception (`!`) or a mid-path `**` would be simulated wrong.
    assert all(not p.startswith('!') and '**' not in p.removeprefix('**/') for p in patterns)
    for heavy in ('.git', '.cache', '.tox', 'build', 'datadog_gunicorn.egg-info', 'tests/conftest.py'):
        assert is_ignored(PurePosixPath(heavy), patterns), heavy
    for needed in ('datadog_checks/gunicorn/check.py', 'datadog_checks/gunicorn/data/conf.yaml.example', 'README.md'):
        assert not is_ignored(PurePosixPath(needed), patterns), needed


def test_the_agent_stage_installs_the_wheel_the_wheel_stage_builds(image, built_wheel):
    args = image['agent_args']
    assert built_wheel.name == 'datadog_gunicorn-%s-py3-none-any.whl' % VERSION
    assert args['CHECK_WHEEL'] == built_wheel.name, 'update CHECK_WHEEL in deploy/Dockerfile to %s' % built_wheel.name
    copy = next(c for c in image['agent_stage'] if c.cmd == 'COPY' and flag(c, 'from') == 'wheel')
    source, target = (expand(v, args) for v in copy.value)
    run = expand(only(image['wheel_stage'], 'RUN').value[0], args)
    assert PurePosixPath(source).parent == PurePosixPath(shlex.split(run)[shlex.split(run).index('-w') + 1])
    assert PurePosixPath(source).name == built_wheel.name
    install = shlex.split(expand(only(image['agent_stage'], 'RUN').value[0], args))
    start = install.index('integration')
    # datadog-agent cmd/agent/subcommands/integrations/command.go: -r is --allow-root, -w is --local-wheel.
    assert install[start - 1 : start + 2] == ['agent', 'integration', 'install']
    assert {'-r', '-w'} <= set(install[start + 2 : start + 5])
    assert install[install.index('-w') + 1] == target


def test_the_image_the_examples_pull_is_the_one_the_dockerfile_builds(image):
    args = image['agent_args']
    # The parser gives LABEL as key, value, key, value...
    pairs = only(image['agent_stage'], 'LABEL').value
    labels = dict(zip(pairs[::2], pairs[1::2], strict=True))
    title = labels['org.opencontainers.image.title'].strip('"')
    version = expand(labels['org.opencontainers.image.version'].strip('"'), args)
    assert title == IMAGE_NAME
    assert version == '%s-gunicorn-%s' % (args['AGENT_TAG'], VERSION)
    assert labels['org.opencontainers.image.description'].endswith('check %s"' % VERSION)

    helm_image = helm_values()['agents']['image']
    # The chart pulls `<repository>:<tag>-<tagSuffix>` and reads the Agent version from `tag` alone.
    assert helm_image['repository'].rsplit('/', 1)[-1] == title
    assert helm_image['tag'] == args['AGENT_TAG']
    assert '%s-%s' % (helm_image['tag'], helm_image['tagSuffix']) == version
    operator_image = operator_agent()['spec']['override']['nodeAgent']['image']['name']
    assert operator_image == '%s:%s' % (helm_image['repository'], version)


# YAML examples


def yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob('*.yaml')) + sorted(DEPLOY.rglob('*.yml'))


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and key in merged else value
    return merged


def helm_values() -> dict:
    merged: dict = {}
    for path in HELM_VALUES:
        (values,) = documents(path)
        merged = deep_merge(merged, values)
    return merged


def operator_agent() -> dict:
    (agent,) = documents(OPERATOR_AGENT)
    return agent


def app_deployment() -> dict:
    (deployment,) = documents(APP)
    return deployment


def leaf_paths(tree: dict, opaque: frozenset[str], prefix: str = '') -> Iterator[str]:
    for key, value in tree.items():
        path = prefix + key
        if isinstance(value, dict) and path not in opaque:
            yield from leaf_paths(value, opaque, path + '.')
        else:
            yield path


def pod_annotations() -> dict[str, str]:
    return app_deployment()['spec']['template']['metadata']['annotations']


def annotations_of(kind: str) -> dict[str, Any]:
    """`ad.datadoghq.com/<container>.<kind>` annotations (Autodiscovery v2), parsed, by container name."""
    pattern = re.compile(r'ad\.datadoghq\.com/(?P<container>[^.]+)\.%s' % re.escape(kind))
    found = {}
    for key, value in pod_annotations().items():
        match = pattern.fullmatch(key)
        if match:
            found[match.group('container')] = json.loads(value)
    return found


def check_configurations() -> list[tuple[str, dict, dict]]:
    """(where, init_config, instance) for every instance of the check in the examples."""
    configurations = []
    for origin, files in (
        ('helm datadog.confd', helm_values()['datadog'].get('confd', {})),
        ('operator extraConfd', operator_agent()['spec']['override']['nodeAgent']['extraConfd']['configDataMap']),
    ):
        for name, text in files.items():
            assert name == 'gunicorn.yaml', '%s file %s does not configure the check named gunicorn' % (origin, name)
            config = yaml.safe_load(text)
            for instance in config['instances']:
                configurations.append(('%s %s' % (origin, name), config.get('init_config') or {}, instance))
    for container, templates in annotations_of('checks').items():
        assert set(templates) == {'gunicorn'}, 'the %s annotation must configure the check named gunicorn' % container
        template = templates['gunicorn']
        for instance in template['instances']:
            configurations.append(('%s.checks annotation' % container, template.get('init_config') or {}, instance))
    return configurations


def procfs_settings(node: Any) -> Iterator[str]:
    """Every value given to procfs_path: as a key anywhere, or as a DD_PROCFS_PATH environment variable."""
    if isinstance(node, dict):
        if node.get('name') == 'DD_PROCFS_PATH':
            yield node.get('value')
        for key, value in node.items():
            if key in ('procfs_path', 'DD_PROCFS_PATH') and not isinstance(value, (dict, list)):
                yield value
            yield from procfs_settings(value)
    elif isinstance(node, list):
        for item in node:
            yield from procfs_settings(item)


def load_models(init_config: dict, instance: dict) -> GunicornCheck:
    check = GunicornCheck('gunicorn', init_config, [instance])
    check.load_configuration_models()
    return check


@pytest.mark.parametrize('path', yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_under_deploy_parses(path):
    assert documents(path), '%s holds no document' % path


def test_every_check_configuration_in_the_examples_validates():
    configurations = check_configurations()
    origins = {origin.split()[0] for origin, _, _ in configurations}
    assert origins == {'helm', 'operator', 'web.checks'}, origins
    for origin, init_config, instance in configurations:
        check = load_models(init_config, instance)
        if 'app_autodiscovery' in instance:  # the node Agent's one instance for every application on its node
            assert check.config.app_autodiscovery.enabled and check.config.proc_name is None, origin
        else:
            assert check.config.proc_name == instance['proc_name'], origin


@pytest.mark.parametrize(
    'instance, option',
    [
        ({'tags': ['team:web']}, 'proc_name'),
        ({'proc_name': 'myapp', 'cpu_sample_interval': 3}, 'cpu_sample_interval'),
        ({'proc_name': 'myapp', 'bind': ['myhost:8000']}, 'bind'),
    ],
)
def test_a_broken_instance_is_rejected_by_the_same_validation(instance, option):
    with pytest.raises(ConfigurationError, match=option):
        load_models({}, instance)


def test_annotations_set_no_option_reserved_to_trusted_providers():
    # Pod annotations are an untrusted configuration provider: an Agent with integration_ignore_untrusted_file_params
    # rejects the options the spec marks require_trusted_provider (config_models SECURE_FIELD_NAMES) when they come
    # from one. Those belong in the node Agent's own configuration (confd / extraConfd).
    from datadog_checks.gunicorn.config_models.instance import SECURE_FIELD_NAMES
    from datadog_checks.gunicorn.config_models.shared import SECURE_FIELD_NAMES as SHARED_SECURE_FIELD_NAMES

    for container, templates in annotations_of('checks').items():
        template = templates['gunicorn']
        assert not SHARED_SECURE_FIELD_NAMES & set(template.get('init_config') or {}), container
        for instance in template['instances']:
            assert not SECURE_FIELD_NAMES & set(instance), container


def test_annotations_name_a_container_of_the_pod():
    containers = {c['name'] for c in app_deployment()['spec']['template']['spec']['containers']}
    for kind in ('checks', 'logs'):
        assert annotations_of(kind), 'gunicorn-app.yaml has no %s annotation' % kind
        assert set(annotations_of(kind)) <= containers


def test_log_annotations_select_the_gunicorn_pipeline_and_keep_records_whole():
    (pipeline,) = documents(REPO / 'assets' / 'logs' / 'gunicorn.yaml')
    source = pipeline['pipeline']['filter']['query'].removeprefix('source:')
    (samples,) = documents(REPO / 'assets' / 'logs' / 'gunicorn_tests.yaml')
    records = [t['sample'] for t in samples['tests']]
    assert any('\n' in r for r in records), 'the pipeline samples lost their multi-line records'
    for container, configs in annotations_of('logs').items():
        for config in configs:
            assert config['source'] == source, container
            for rule in config.get('log_processing_rules', []):
                if rule['type'] != 'multi_line':
                    continue
                # The Agent compiles the pattern with Go's RE2: nothing Python accepts that RE2 refuses.
                assert not re.search(r'\(\?[=!<]|\\[1-9]', rule['pattern']), 'RE2 has no lookaround or backreference'
                # The Agent starts a new log at each line the pattern matches from the line's start.
                start = re.compile(rule['pattern'])
                for record in records:
                    first, *rest = record.split('\n')
                    assert start.match(first), 'the rule would not start a log at %r' % first[:80]
                    assert not [line for line in rest if start.match(line)], 'the rule would split %r' % first[:80]


def test_helm_values_use_only_keys_the_chart_documents():
    for path in HELM_VALUES:
        (values,) = documents(path)
        unknown = set(leaf_paths(values, HELM_OPAQUE)) - HELM_KEYS
        assert not unknown, '%s sets keys the chart does not document: %s' % (path.name, sorted(unknown))


def test_the_datadog_agent_resource_uses_only_documented_fields():
    agent = operator_agent()
    assert (agent['apiVersion'], agent['kind']) == ('datadoghq.com/v2alpha1', 'DatadogAgent')
    unknown = set(leaf_paths(agent['spec'], OPERATOR_OPAQUE)) - OPERATOR_KEYS
    assert not unknown, 'datadog-agent.yaml sets fields the Operator does not document: %s' % sorted(unknown)


def test_the_agent_sees_the_hosts_processes_and_may_read_their_fds():
    values = helm_values()
    node_agent = operator_agent()['spec']['override']['nodeAgent']
    assert values['datadog']['useHostPID'] is True
    assert node_agent['hostPID'] is True
    for security_context in (
        values['agents']['containers']['agent']['securityContext'],
        node_agent['containers']['agent']['securityContext'],
    ):
        assert 'SYS_PTRACE' in security_context['capabilities']['add']
    # Both mount the node's /proc at /host/proc, the Agent's default procfs_path in a container: an example that sets
    # it may only repeat that value.
    for path in yaml_files():
        for setting in procfs_settings(documents(path)):
            assert setting == HOST_PROC, '%s sets procfs_path to %s' % (path.name, setting)


def test_logs_are_collected_and_dogstatsd_is_reachable_from_pods():
    values = helm_values()
    features = operator_agent()['spec']['features']
    assert values['datadog']['logs']['enabled'] and features['logCollection']['enabled']
    assert values['datadog']['dogstatsd']['useHostPort'] and features['dogstatsd']['hostPortConfig']['enabled']
    (container,) = app_deployment()['spec']['template']['spec']['containers']
    env = {e['name']: e for e in container['env']}
    assert env['DD_AGENT_HOST']['valueFrom']['fieldRef']['fieldPath'] == 'status.hostIP'
    assert '--statsd-host=$(DD_AGENT_HOST):8125' in container['command']


def test_no_example_holds_an_api_key():
    values = helm_values()
    credentials = operator_agent()['spec']['global']['credentials']
    assert 'apiKey' not in values['datadog'] and values['datadog']['apiKeyExistingSecret']
    assert 'apiKey' not in credentials and credentials['apiSecret']['keyName'] == 'api-key'
    for path in [*yaml_files(), DOCKERFILE]:
        assert not re.search(r'\b[0-9a-f]{32}\b', path.read_text()), '%s holds something shaped like an API key' % path


# The build-time verification


def run_verify_install(wheel_name: str) -> subprocess.CompletedProcess:
    # Only the file name is read (the version it carries): no wheel needs to exist.
    return subprocess.run(
        [sys.executable, str(DEPLOY / 'verify_install.py'), '/tmp/%s' % wheel_name],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_verify_install_probes_an_option_guarded_by_trusted_providers():
    from datadog_checks.gunicorn.config_models.instance import SECURE_FIELD_NAMES

    probe = runpy.run_path(str(DEPLOY / 'verify_install.py'))['PROBE_INSTANCE']
    assert SECURE_FIELD_NAMES & set(probe), 'the probe would not reach the trusted-provider validation'


def test_verify_install_accepts_this_check_with_this_base_package():
    done = run_verify_install('datadog_gunicorn-%s-py3-none-any.whl' % VERSION)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith('datadog-gunicorn %s installed; datadog-checks-base ' % VERSION)


def test_verify_install_fails_in_one_line_when_another_gunicorn_check_is_installed():
    # What the build would see if Datadog's own check (4.x in recent Agents) were still the installed one.
    done = run_verify_install('datadog_gunicorn-4.3.0-py3-none-any.whl')
    assert done.returncode == 1
    assert done.stdout == ''
    (line,) = done.stderr.splitlines()
    assert 'is %s, not 4.3.0' % VERSION in line


def test_verify_install_refuses_a_base_older_than_the_wheel_requires(monkeypatch):
    # `integration install -w` installs the wheel on any Agent; the image build is where an older one is caught.
    spec = importlib.util.spec_from_file_location('verify_install', DEPLOY / 'verify_install.py')
    verify_install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verify_install)
    for base, refused in (('34.3.1', True), ('35.0.1', False), ('38.5.0', False)):
        requires, version = (lambda name: ['datadog-checks-base>=35.0.1']), (lambda name, base=base: base)
        installed = types.SimpleNamespace(requires=requires, version=version)
        monkeypatch.setattr(verify_install, 'metadata', installed)
        if refused:
            with pytest.raises(verify_install.VerificationError, match='%s in this Agent is older than 35.0.1' % base):
                verify_install.check_base_version()
        else:
            verify_install.check_base_version()
