"""The check on every Agent's datadog-checks-base: the trusted-provider guard where the base has it (37.33.0, Agent
7.78.0, on), and on older bases the models running as that Agent runs every check's, without touching the base.

tox runs this file on the newest base (py313) and on Agents 7.51.0 and 7.58.0's (agent751, agent758): each test says
which bases it is about, and is skipped on the others.
"""

from __future__ import annotations

import types

import pytest
import yaml

from datadog_checks.base.stubs import datadog_agent
from datadog_checks.base.utils.models import validation
from datadog_checks.gunicorn import GunicornCheck, base_compat
from datadog_checks.gunicorn.config_models import instance, shared

on_newest = pytest.mark.skipif(
    not base_compat.HAS_TRUSTED_PROVIDERS, reason='this base predates trusted providers (Agent 7.78.0)'
)
on_older = pytest.mark.skipif(base_compat.HAS_TRUSTED_PROVIDERS, reason='this base has trusted providers')

# Each option the spec reserves to trusted providers, in the section where it is set.
GUARDED = [
    ('instances', 'pid_file', '/run/web.pid'),
    ('instances', 'control_socket', '/run/web.ctl'),
    ('instances', 'gunicorn', '/opt/web/bin/gunicorn'),
    ('init_config', 'gunicorn', '/opt/web/bin/gunicorn'),
]


@pytest.fixture
def untrusted_providers_ignored(monkeypatch):
    """An Agent with `integration_ignore_untrusted_file_params: true` (datadog.yaml)."""
    monkeypatch.setitem(datadog_agent._config, 'integration_ignore_untrusted_file_params', True)
    # The Agent's default list (the base's DEFAULT_TRUSTED_PROVIDERS); the stub would answer '' for an unset option.
    monkeypatch.setitem(datadog_agent._config, 'integration_trusted_providers', ['file', 'remote-config'])


def check_from(provider: str, section: str, option: str, value: str) -> GunicornCheck:
    init_config = {option: value} if section == 'init_config' else {}
    instance_config = {'proc_name': 'web', **({option: value} if section == 'instances' else {})}
    check = GunicornCheck('gunicorn', init_config, [instance_config])
    check.provider = provider  # what the Agent sets from the configuration provider the instance came from
    return check


def loaded_value(check: GunicornCheck, section: str, option: str) -> object:
    check.load_configuration_models()
    return getattr(check.config if section == 'instances' else check.shared_config, option)


@on_newest
@pytest.mark.parametrize('section, option, value', GUARDED)
def test_an_untrusted_provider_is_refused_a_guarded_option_by_name(untrusted_providers_ignored, section, option, value):
    # Pod annotations reach the Agent through an Autodiscovery provider, not a file.
    error = check_from('kubernetes', section, option, value).run()
    assert "Field '%s' is not allowed from untrusted provider 'kubernetes'" % option in error, error


# A file is a trusted provider on every Agent. Before 7.78.0 the setting does not exist: every check takes every option
# from every provider, and so does this one, with no message.
ACCEPTING = ['file'] if base_compat.HAS_TRUSTED_PROVIDERS else ['file', 'kubernetes']


@pytest.mark.parametrize('provider', ACCEPTING)
@pytest.mark.parametrize('section, option, value', GUARDED)
def test_the_guarded_options_are_accepted_from(provider, untrusted_providers_ignored, section, option, value):
    assert loaded_value(check_from(provider, section, option, value), section, option) == value


@on_newest
def test_on_a_base_with_trusted_providers_the_models_use_the_base_itself():
    # No behaviour change on the newest Agents: the generated models call the base's own validation package.
    assert instance.validation is validation and shared.validation is validation


@on_older
def test_an_older_base_is_left_as_it_is():
    # Other checks in the same Agent see the base unchanged: only this check's own model modules see the difference.
    with pytest.raises(AttributeError):
        validation.security  # noqa: B018
    assert instance.validation is not validation and instance.validation.core is validation.core


def test_models_without_the_security_module_run(monkeypatch):
    """What an older base gives the models, simulated on whichever base runs this: `validation` without `security`."""
    older = types.SimpleNamespace(core=validation.core, utils=validation.utils)
    monkeypatch.setattr(base_compat, 'validation', older)
    monkeypatch.setattr(base_compat, 'HAS_TRUSTED_PROVIDERS', False)
    monkeypatch.setattr(instance, 'validation', older)
    monkeypatch.setattr(shared, 'validation', older)
    base_compat.adapt_config_models()

    for section, option, value in GUARDED:
        assert loaded_value(check_from('kubernetes', section, option, value), section, option) == value


def test_yaml_is_written_in_the_given_order_even_where_the_base_replaced_pyyaml(monkeypatch):
    data = {'init_config': None, 'instances': [{'proc_name': 'web', 'pid_file': '/run/web.pid'}]}
    expected = 'init_config: null\ninstances:\n- proc_name: web\n  pid_file: /run/web.pid\n'
    assert base_compat.dump_yaml(data) == expected

    def dump_all_of_older_bases(documents, stream=None, Dumper=None, encoding='utf-8', **kwargs):
        # What bases 35.0.1 and 37.0.0 put in place of yaml.dump_all: no sort_keys, bytes by default.
        raise AssertionError('dump_yaml must not go through yaml.dump_all')

    monkeypatch.setattr(yaml, 'dump_all', dump_all_of_older_bases)
    assert base_compat.dump_yaml(data) == expected
