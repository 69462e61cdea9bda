"""Checks, while the Agent image is built, that the Gunicorn check the Agent will run is the wheel just installed.

deploy/Dockerfile runs this with the Agent's embedded Python right after `agent integration install -w WHEEL`. Two
things can silently go wrong there, and both fail the build with one line naming the problem and the fix:

- Datadog's own `gunicorn` check is still the installed one (the install did not replace it);
- the Agent's datadog-checks-base is older than the one the wheel requires (35.0.1, Agent 7.51.0): `integration
  install -w` does not compare versions; or it cannot load the check's configuration models with the options
  only trusted configuration providers may set (`pid_file`, `control_socket`, `gunicorn`), which the models check
  with the base's trusted-provider code where the base has it (37.33.0, Agent 7.78.0, on) and accept elsewhere
  (datadog_checks/gunicorn/base_compat.py).

Usage: python verify_install.py PATH/TO/datadog_gunicorn-<version>-py3-none-any.whl
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = 'datadog-gunicorn'
BASE = 'datadog-checks-base'
# How the wheel's metadata states its floor: `Requires-Dist: datadog-checks-base>=35.0.1`.
BASE_FLOOR = re.compile(r'datadog-checks-base\s*>=\s*([0-9][\w.]*)')
# One value for each option the models guard behind a trusted provider, so that validating this configuration reaches
# the base package's trusted-provider code. Nothing here is started or opened.
PROBE_INIT_CONFIG = {'gunicorn': 'gunicorn'}
PROBE_INSTANCE = {
    'proc_name': 'image-build-probe',
    'pid_file': '/run/gunicorn/image-build-probe.pid',
    'control_socket': '/run/gunicorn/image-build-probe.ctl',
}


class VerificationError(Exception):
    """The image must not be used: the message says why and what to do."""


def wheel_version(wheel: Path) -> str:
    # Wheel file names are `{distribution}-{version}-{python tag}-{abi tag}-{platform tag}.whl` (PEP 427).
    parts = wheel.name.split('-')
    if len(parts) != 5 or not wheel.name.endswith('.whl'):
        raise VerificationError('%s is not a wheel file name; pass the wheel given to `integration install -w`' % wheel)
    return parts[1]


def installed_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise VerificationError(
            "%s is not installed in this Python; run this with the Agent's embedded Python after "
            '`agent integration install -r -w WHEEL`' % DISTRIBUTION
        ) from exc


def release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version (`37.0.0`, `38.5.0rc1`), enough to order the base's releases."""
    return tuple(int(part) for part in re.findall(r'\d+', version.split('rc')[0])[:3])


def required_base() -> str:
    """The oldest base the installed check declares (`Requires-Dist: datadog-checks-base>=X`)."""
    for requirement in metadata.requires(DISTRIBUTION) or []:
        found = BASE_FLOOR.match(requirement)
        if found:
            return found.group(1)
    raise VerificationError('%s declares no minimum %s; rebuild the wheel from this repository' % (DISTRIBUTION, BASE))


def check_base_version() -> None:
    required, found = required_base(), metadata.version(BASE)
    if release(found) < release(required):
        raise VerificationError(
            '%s %s in this Agent is older than %s, which %s needs (Agent 7.51.0 or later); '
            'build from a newer Agent image (--build-arg AGENT_TAG=...)' % (BASE, found, required, DISTRIBUTION)
        )


def load_probe_configuration() -> None:
    try:
        from datadog_checks.gunicorn import GunicornCheck

        check = GunicornCheck('gunicorn', PROBE_INIT_CONFIG, [PROBE_INSTANCE])
        check.load_configuration_models()
    except (ImportError, AttributeError) as exc:
        base = metadata.version(BASE)
        raise VerificationError(
            "datadog-checks-base %s in this Agent cannot load the check's configuration models (%s: %s); "
            'build from a newer Agent image (--build-arg AGENT_TAG=...)' % (base, type(exc).__name__, str(exc)[:200])
        ) from exc


def verify(wheel: Path) -> str:
    expected = wheel_version(wheel)
    found = installed_version()
    if found != expected:
        raise VerificationError(
            'the installed %s is %s, not %s from %s: the Agent still has another gunicorn check; '
            'check the output of `agent integration install` above' % (DISTRIBUTION, found, expected, wheel.name)
        )
    check_base_version()
    load_probe_configuration()
    return '%s %s installed; datadog-checks-base %s loads its configuration models' % (
        DISTRIBUTION,
        found,
        metadata.version(BASE),
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print('usage: verify_install.py WHEEL', file=sys.stderr)
        return 2
    try:
        print(verify(Path(argv[0])))
    except VerificationError as exc:
        print('verify_install: %s' % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
