"""The two commands of the README, for a machine with nothing but Python 3 and pip.

    python3 scripts/dev.py quickstart   # start a real Gunicorn, run the check twice against it, print the result
    python3 scripts/dev.py test         # the whole test suite: lint, the tests on three Agents' Pythons, bench, soak

Everything is installed into `.cache/` in this repository, never into the system Python.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / '.cache'
TOOLS = CACHE / 'tools'
QUICKSTART = CACHE / 'quickstart'
# The Pythons of the Agents tox tests (tox.ini): 3.11 (7.51-7.57), 3.13 (7.72 on), 3.12 (7.58-7.71). Their order is
# only their order on PATH: each tox environment asks for its own version. The quick start uses whichever Python 3
# runs this script.
TEST_PYTHONS = ('3.11', '3.13', '3.12')


def _venv(path: Path, *requirements: str) -> Path:
    """A virtualenv at `path` with `requirements` installed once (a marker records what was installed)."""
    python = path / 'bin' / 'python'
    marker = path / '.installed'
    wanted = '\n'.join(requirements)
    if marker.exists() and marker.read_text() == wanted:
        return python
    print('==> preparing %s' % path.relative_to(ROOT), flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run(
        [str(python), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', *requirements], check=True
    )
    marker.write_text(wanted)
    return python


def _find_python(version: str) -> str | None:
    """An interpreter for `version`: on PATH, or one of pyenv's prebuilt versions."""
    found = shutil.which('python%s' % version)
    if found and subprocess.run([found, '-c', ''], capture_output=True).returncode == 0:
        return found
    pyenv_root = os.environ.get('PYENV_ROOT', os.path.expanduser('~/.pyenv'))
    for candidate in sorted(glob.glob('%s/versions/%s*/bin/python%s' % (pyenv_root, version, version)), reverse=True):
        return candidate
    return None


def test(args: list[str]) -> int:
    python = _venv(TOOLS, 'tox>=4.11')
    # tox finds interpreters through PATH: put each wanted version's directory there.
    paths = []
    for version in TEST_PYTHONS:
        found = _find_python(version)
        if found is None:
            print('error: Python %s is required for the tests (pyenv install %s)' % (version, version), file=sys.stderr)
            return 2
        paths.append(str(Path(found).parent))
    env = dict(os.environ, PATH=os.pathsep.join([*paths, os.environ.get('PATH', '')]))
    return subprocess.run([str(python), '-m', 'tox', 'run', '--root', str(ROOT), *args], env=env, cwd=ROOT).returncode


def quickstart(args: list[str]) -> int:
    # psutil: the demo starts its server with tests/gunicorn_env.py, which reads the process table with it; neither the
    # check nor datadog-checks-base[deps] requires it.
    python = _venv(QUICKSTART / 'check', '-e', '%s[deps]' % ROOT, *_pinned_base(), 'psutil')
    # The rest runs inside the check's virtualenv, which has psutil and the check itself.
    return subprocess.run([str(python), str(ROOT / 'scripts' / 'quickstart_demo.py'), *args], cwd=ROOT).returncode


def _pinned_base() -> list[str]:
    return [
        line
        for line in (ROOT / 'requirements-dev.txt').read_text().splitlines()
        if line.startswith('datadog-checks-base')
    ]


COMMANDS = {'test': test, 'quickstart': quickstart}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == '__main__':
    sys.exit(main())
