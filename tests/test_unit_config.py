"""Configuration: generated files in sync with the spec, and bad options named in a ConfigurationError."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
import yaml

from datadog_checks.base import ConfigurationError
from datadog_checks.gunicorn import GunicornCheck
from datadog_checks.gunicorn.configuration import parse_bind

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def pyyaml_as_ddev_has_it(monkeypatch):
    """ddev renders the generated files in its own process, with PyYAML's `dump_all`. The bases of older Agents replace
    it in every process that imports AgentCheck (see base_compat.py), as this one does, and ddev's renderer passes
    `sort_keys`, which theirs refuses: give the renderer PyYAML's own for the test."""
    try:
        from datadog_checks.base import ddyaml
    except ImportError:  # base 38 and later: nothing replaced
        return
    if ddyaml.pyyaml_dump_all is not None:
        monkeypatch.setattr(yaml, 'dump_all', ddyaml.pyyaml_dump_all)


def load_sync_script():
    spec = importlib.util.spec_from_file_location('sync_config', ROOT / 'scripts' / 'sync_config.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_config_files_match_the_spec():
    stale = load_sync_script().drifted()
    assert not stale, 'regenerate with `python scripts/sync_config.py --write`: %s' % stale


def test_drift_is_detected(tmp_path, monkeypatch):
    sync = load_sync_script()
    files = sync.render()
    copy = tmp_path / 'conf.yaml.example'
    copy.write_text(files[sync.EXAMPLE].replace('cpu_sample_interval', 'cpu_interval'))
    assert sync.drifted({copy: files[sync.EXAMPLE]}) == [copy]


@pytest.mark.parametrize(
    'instance, option, hint',
    [
        ({}, 'proc_name', 'pid_file'),
        ({'tags': ['a:b']}, 'proc_name', 'pid_file'),
        ({'pid_file': ''}, 'pid_file', 'non-empty path'),
        ({'proc_name': ''}, 'proc_name', 'non-empty name'),
        ({'proc_name': ['a']}, 'proc_name', 'non-empty name'),
        ({'proc_name': 'a', 'cpu_sample_interval': 0}, 'cpu_sample_interval', 'greater than 0 and at most 1'),
        ({'proc_name': 'a', 'cpu_sample_interval': 1.5}, 'cpu_sample_interval', 'greater than 0 and at most 1'),
        ({'proc_name': 'a', 'cpu_sample_interval': -1}, 'cpu_sample_interval', 'greater than 0 and at most 1'),
        ({'proc_name': 'a', 'cpu_sample_interval': 'fast'}, 'cpu_sample_interval', 'number'),
        ({'proc_name': 'a', 'tags': 'team:web'}, 'tags', 'tuple'),
        ({'proc_name': 'a', 'bind': ['localhost:8000']}, 'bind', 'not a literal IP address'),
        ({'proc_name': 'a', 'bind': ['127.0.0.1']}, 'bind', 'no port'),
        ({'proc_name': 'a', 'bind': ['fd://3']}, 'bind', 'unsupported scheme'),
        ({'proc_name': 'a', 'bind': [8000]}, 'bind', 'as strings'),
        ({'proc_name': 'a', 'bind': []}, 'bind', 'list of addresses'),
    ],
)
def test_bad_options_name_the_option(instance, option, hint, dd_run_check):
    check = GunicornCheck('gunicorn', {}, [instance])
    with pytest.raises(Exception, match='ConfigurationError') as info:
        dd_run_check(check)
    assert option in str(info.value) and hint in str(info.value)


def test_configuration_error_type(aggregator):
    check = GunicornCheck('gunicorn', {}, [{'proc_name': 'a', 'cpu_sample_interval': 2}])
    with pytest.raises(ConfigurationError):
        check.load_configuration_models()


def test_a_good_upper_bound_is_accepted():
    check = GunicornCheck('gunicorn', {}, [{'proc_name': 'a', 'cpu_sample_interval': 1}])
    check.load_configuration_models()
    assert check.config.cpu_sample_interval == 1
    assert GunicornCheck('gunicorn', {}, [{'proc_name': 'a'}]).run() == ''  # the default applies


@pytest.mark.parametrize(
    'instance', [{'pid_file': '/run/web.pid'}, {'proc_name': 'web', 'pid_file': '/run/web.pid'}, {'proc_name': 'web'}]
)
def test_either_proc_name_or_pid_file_is_enough(instance):
    check = GunicornCheck('gunicorn', {}, [instance])
    check.load_configuration_models()
    assert (check.config.proc_name, check.config.pid_file) == (instance.get('proc_name'), instance.get('pid_file'))


def test_pid_file_is_for_trusted_providers_only():
    # The Agent reads the path it names: like `gunicorn`, only a trusted configuration source may set it.
    from datadog_checks.gunicorn.config_models.instance import SECURE_FIELD_NAMES

    assert 'pid_file' in SECURE_FIELD_NAMES


def test_the_minimum_base_is_the_one_the_package_requires():
    import tomllib

    from datadog_checks.gunicorn.configuration import MINIMUM_BASE

    project = tomllib.loads((ROOT / 'pyproject.toml').read_text(encoding='utf-8'))['project']
    assert project['dependencies'] == ['datadog-checks-base>=%s' % MINIMUM_BASE]


def test_bind_addresses_are_taken_as_gunicorn_writes_them():
    check = GunicornCheck(
        'gunicorn', {}, [{'proc_name': 'a', 'bind': [' 127.0.0.1:8000', '[::]:80', 'unix:/run/a.sock']}]
    )
    check.load_configuration_models()
    assert check.config.bind == ('127.0.0.1:8000', '[::]:80', 'unix:/run/a.sock')
    single = GunicornCheck('gunicorn', {}, [{'proc_name': 'a', 'bind': 'unix:/run/a.sock'}])
    single.load_configuration_models()
    assert single.config.bind == ('unix:/run/a.sock',)


@pytest.mark.parametrize(
    'text, family, ip, port, path, canonical',
    [
        ('127.0.0.1:8000', socket.AF_INET, '127.0.0.1', 8000, '', '127.0.0.1:8000'),
        ('0.0.0.0:80', socket.AF_INET, '0.0.0.0', 80, '', '0.0.0.0:80'),
        ('tcp://127.0.0.1:8000', socket.AF_INET, '127.0.0.1', 8000, '', '127.0.0.1:8000'),
        ('http://127.0.0.1:18001', socket.AF_INET, '127.0.0.1', 18001, '', '127.0.0.1:18001'),
        ('[::]:8000', socket.AF_INET6, '::', 8000, '', '[::]:8000'),
        ('https://[0:0::1]:443', socket.AF_INET6, '::1', 443, '', '[::1]:443'),
        ('unix:/run/app.sock', socket.AF_UNIX, '', 0, '/run/app.sock', 'unix:/run/app.sock'),
        ('unix:///run/my app.sock', socket.AF_UNIX, '', 0, '/run/my app.sock', 'unix:/run/my app.sock'),
        ('unix://relative.sock', socket.AF_UNIX, '', 0, 'relative.sock', 'unix:relative.sock'),
        ('unix:@abstract', socket.AF_UNIX, '', 0, '@abstract', 'unix:@abstract'),
    ],
)
def test_parse_bind(text, family, ip, port, path, canonical):
    bind = parse_bind(text)
    assert (bind.family, bind.ip, bind.port, bind.path, str(bind)) == (family, ip, port, path, canonical)


@pytest.mark.parametrize(
    'text', ['localhost:8000', '127.0.0.1', ':8000', '127.0.0.1:0', '127.0.0.1:70000', 'fd://3', 'unix:', '[::1]']
)
def test_parse_bind_refuses_what_it_would_have_to_guess(text):
    with pytest.raises(ValueError):
        parse_bind(text)
