"""The Gunicorn version, from `<gunicorn> --version`, run without a shell and with a time limit."""

from __future__ import annotations

import re
import shlex
import subprocess

_VERSION = re.compile(r'\(version ([^)\s]+)\)')
TIMEOUT_SECONDS = 5.0


class VersionError(Exception):
    pass


def command(setting: str | list[str]) -> list[str]:
    """The argv for `setting` (`/venv/bin/gunicorn` or `docker exec web gunicorn`) followed by `--version`."""
    argv = list(setting) if isinstance(setting, (list, tuple)) else shlex.split(setting)
    if not argv:
        raise VersionError('the `gunicorn` option is empty')
    return [*argv, '--version']


def parse_version(output: str) -> str | None:
    match = _VERSION.search(output)
    return match.group(1) if match else None


def read_version(setting: str | list[str], timeout: float = TIMEOUT_SECONDS) -> str:
    argv = command(setting)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise VersionError('cannot run %r: %s' % (argv[0], exc)) from exc
    version = parse_version(done.stdout) or parse_version(done.stderr)
    if version is None:
        raise VersionError('%r printed no version (exit status %s)' % (argv[0], done.returncode))
    return version
