"""What differs between the datadog-checks-base releases embedded by the Agents this check supports (7.51.0 on).

Two differences matter to the check.

YAML output. Bases 35.0.1 and 37.0.0 (Agents 7.51.0 and 7.58.0; 38.5.0 no longer does) replace PyYAML's
`yaml.dump_all`, which `yaml.safe_dump` calls, with one of their own as soon as AgentCheck is imported, when the Agent's
`disable_unsafe_yaml` is on (its default, and the stub's): that one takes no `sort_keys` and returns bytes unless told
an encoding. `dump_yaml` drives PyYAML's safe dumper directly, as `yaml.dump_all` does, whichever function the module
holds, and leaves it as it is.

Trusted providers. The configuration models generated from spec.yaml call
`validation.security.check_field_trusted_provider` for the options only a trusted configuration provider may set
(`pid_file`, `control_socket`, `gunicorn`). That module first ships in datadog-checks-base 37.33.0 (Agent 7.78.0),
together with the Agent setting it enforces (`integration_ignore_untrusted_file_params`). An older Agent has neither:
it accepts every option from every provider, for every check. On such a base the models are given a view of the
base's `validation` package whose `security` accepts every value, exactly what that Agent does for every other check.

The view is bound to this package's own model modules only (their module-level name `validation`): the base's modules
are left as they are, so no other check running in the same Agent sees a difference.
"""

from __future__ import annotations

import io
from types import ModuleType

import yaml

from datadog_checks.base.utils.models import validation

from .config_models import instance, shared


def _base_has_trusted_providers() -> bool:
    try:
        # Base 37.33.0 and later: a lazily loaded submodule. Older: no such attribute.
        return validation.security is not None
    except AttributeError:
        return False


HAS_TRUSTED_PROVIDERS = _base_has_trusted_providers()


class _EveryProviderTrusted:
    """`validation.security` as an Agent without trusted providers behaves: every provider may set every option."""

    @staticmethod
    def check_field_trusted_provider(field_name: str, value: object, security_config: object) -> None:
        return None


class _ValidationWithoutSecurity:
    """The base's `validation` package, plus the `security` member it lacks before 37.33.0."""

    security = _EveryProviderTrusted

    def __init__(self, base: ModuleType) -> None:
        self._base = base

    def __getattr__(self, name: str) -> object:
        return getattr(self._base, name)


def adapt_config_models() -> None:
    """On a base without trusted providers, let the generated models run as that Agent runs every check's models."""
    if HAS_TRUSTED_PROVIDERS:
        return
    view = _ValidationWithoutSecurity(validation)
    for models in (instance, shared):
        models.validation = view


def dump_yaml(data: object) -> str:
    """`data` as YAML text, in block style, keys in the order given: what `yaml.safe_dump(data, sort_keys=False,
    default_flow_style=False)` returns where the base has not replaced `yaml.dump_all`."""
    stream = io.StringIO()
    dumper = yaml.SafeDumper(stream, default_flow_style=False, sort_keys=False)
    try:
        dumper.open()
        dumper.represent(data)
        dumper.close()
    finally:
        dumper.dispose()
    return stream.getvalue()
