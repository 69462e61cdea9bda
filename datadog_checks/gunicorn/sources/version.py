"""The Gunicorn version a master runs: read from its own installation, or printed by a `gunicorn --version` command.

The master knows where its Gunicorn is installed; the Agent's PATH rarely does (Gunicorn lives in a virtualenv). So
the version comes first from the `gunicorn-VERSION.dist-info` directory of the master's site-packages, found from the
extension modules it mapped (/proc/PID/maps, ptrace-level access: setproctitle's own module lives there whenever
titles are set) or, for an untitled master, from the interpreter or script its command line names. Inside another
root than the Agent's (/proc/PID/root for a container, or the host's root mounted at /host) those directories are
walked without following links (beneath.py): there an absolute link would resolve against the Agent's root and read
outside the master's. In the Agent's own root a link leads nowhere the Agent could not read anyway. A command
(`gunicorn` option) is run only when configured, or when the installation cannot be read: without a shell and with a
time limit.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence

from .beneath import listdir_beneath
from .procfs import ProcError, ProcFS

_VERSION = re.compile(r'\(version ([^)\s]+)\)')
_DIST_INFO = re.compile(r'^gunicorn-([0-9][0-9A-Za-z.+!_-]*)\.dist-info$', re.IGNORECASE)
_PACKAGES_DIRS = ('site-packages', 'dist-packages')
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


def installed_version(procfs: ProcFS, pid: int, argv: Sequence[str] = ()) -> str:
    """The version of the Gunicorn installed where master `pid` imports it from; VersionError saying why not."""
    start = _root(procfs, pid)
    directories = _packages_directories(procfs, pid, start, argv)
    if not directories:
        raise VersionError(
            'no site-packages of master %d is known: its /proc/PID/maps needs ptrace-level access (root or '
            'CAP_SYS_PTRACE), and its title hides the command line' % pid
        )
    for directory in directories:
        try:
            names = _listdir(start, directory)
        except OSError:
            continue  # not there, a link, or not readable: not where it imports from
        for name in names:
            match = _DIST_INFO.match(name)
            if match:
                return match.group(1)
    raise VersionError('no gunicorn-*.dist-info in %s' % ', '.join(directories[:3]))


def _listdir(start: str, directory: str) -> list[str]:
    return os.listdir(directory) if start == '/' else listdir_beneath(start, directory)


def _root(procfs: ProcFS, pid: int) -> str:
    """Where the master's '/' is for this process: its own root, /proc/PID/root, or (without ptrace-level access to
    follow that) the host's root as the Agent mounts it."""
    shared = procfs.shares_root(pid)
    if shared is None:
        return procfs.host_root or '/'
    return '/' if shared else procfs.path(pid, 'root')


def _packages_directories(procfs: ProcFS, pid: int, start: str, argv: Sequence[str]) -> list[str]:
    """Directories named site-packages or dist-packages the master imports from, most telling first."""
    found: dict[str, None] = {}
    try:
        mapped = procfs.read_mapped_paths(pid)
    except ProcError:
        mapped = []
    for path in mapped:
        parts = path.split('/')
        for index, part in enumerate(parts):
            if part in _PACKAGES_DIRS:
                found['/'.join(parts[: index + 1])] = None
                break
    # A raw command line names the virtualenv: /venv/bin/python3 /venv/bin/gunicorn ... or python -m gunicorn.
    for program in argv[:2]:
        if os.path.isabs(program) and os.path.basename(os.path.dirname(program)) == 'bin':
            prefix = os.path.dirname(os.path.dirname(program))
            for lib in _python_libraries(start, prefix):
                found[lib] = None
    return list(found)


def _python_libraries(start: str, prefix: str) -> list[str]:
    try:
        names = _listdir(start, prefix + '/lib')
    except OSError:
        return []
    return ['%s/lib/%s/site-packages' % (prefix, name) for name in sorted(names) if name.startswith('python')]
