"""Run Datadog's own integration validators (`ddev validate ...`) and codespell on this repository.

    python3.13 scripts/validate_ddev.py                # this repository
    python3.13 scripts/validate_ddev.py --root DIR     # another tree with the same layout (a scratch copy)

ddev only understands an integration as a folder named after it inside a repository it knows, and run anywhere else it
validates nothing and still exits 0. So this script builds a throwaway workspace: a git repository holding a symlink
`gunicorn` -> the tree to validate and a `.ddev.toml` that declares the workspace as the `extras` repository. ddev
runs there with HOME pointed at a temporary directory (it writes its config and caches under HOME).

Each validator must exit 0 AND print what proves it looked at the `gunicorn` integration (counts, file names): a
validator that found nothing to validate is a failure too. Standard library only; ddev is installed once into
`.cache/ddev/` with the interpreter running this script, which must be Python 3.13 (ddev 20 needs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = 'gunicorn'
# The version these validators and their expected output were verified with; a new ddev may print other words.
DDEV_VERSION = '20.1.0'
DDEV_CACHE = ROOT / '.cache' / 'ddev'


@dataclass(frozen=True)
class Validator:
    name: str
    # Every pattern must match ddev's output: together they show that the gunicorn integration was examined.
    evidence: tuple[str, ...]


def validators(root: Path) -> list[Validator]:
    manifest = json.loads((root / 'manifest.json').read_text(encoding='utf-8'))
    dashboards = len(manifest.get('assets', {}).get('dashboards', {}))
    return [
        # Checks conf.yaml.example against spec.yaml. Without the spec it says "Did not find spec file" and exits 0.
        Validator('config', (r'for 1 checks', r'All [1-9]\d* configuration files are valid!')),
        # Checks config_models/ against spec.yaml.
        Validator('models', (r'for 1 checks', r'(?m)^gunicorn:$', r'All [1-9]\d* data model files are in sync!')),
        # metadata.csv: header, types, units, orientation, prefix, duplicates.
        Validator('metadata', (r'Passed: 1\b',)),
        Validator('service-checks', (r'for 1 checks', r'\b1 valid files')),
        # README sections and links; it reads <root>/gunicorn/README.md, so it also proves the workspace is right.
        Validator('readmes', (r'All 1 READMEs are valid!',)),
        Validator('http', (r'Passed: 1\b',)),
        # Prints no count of files. Its evidence is the check count; the workspace is proven by `readmes`.
        Validator('imports', (r'for 1 checks', r'Validation passed!')),
        # "N valid files" counts the dashboards named in the manifest that it parsed.
        Validator('dashboards', (r'for 1 checks', r'\b%d valid files' % dashboards)),
        # Prints no count of views either; tests/test_unit_assets.py checks that every view the manifest names exists.
        Validator('saved-views', (r'for 1 checks', r'All saved views are valid!')),
        # pyproject.toml's [project]: name datadog-gunicorn, tool.hatch.version.path, authors' e-mails. A check it
        # skips is not counted, so "1 valid files" proves it read gunicorn's.
        Validator('package', (r'for 1 checks', r'\b1 valid files')),
        # The base requirement is a single `>=`, [project].dependencies holds nothing else, and every extra is pinned
        # with `==` and listed in the Agent's requirements file, which a workspace does not have: so any third-party
        # extra fails here, as it should (the wheel is installed with --no-deps). Prints no count; see `readmes`.
        Validator('dep', (r'All dependencies are valid!',)),
        # No `__init__(self, name, init_config, agentConfig, instances)`. It names the check whether or not it found
        # it; the workspace is proven by `readmes`.
        Validator('legacy-signature', (r'Check `gunicorn` uses the new agent signature',)),
    ]


def _python313() -> str:
    if sys.version_info[:2] == (3, 13):
        return getattr(sys, '_base_executable', None) or sys.executable
    found = shutil.which('python3.13')
    if found:
        return found
    pyenv = Path(os.environ.get('PYENV_ROOT', Path.home() / '.pyenv'))
    candidates = sorted(pyenv.glob('versions/3.13*/bin/python3.13'), reverse=True)
    if candidates:
        return str(candidates[0])
    raise SystemExit('error: ddev %s needs Python 3.13 (pyenv install 3.13)' % DDEV_VERSION)


def install_ddev() -> Path:
    """ddev in a virtualenv under .cache/ddev, installed once per pinned version."""
    env = DDEV_CACHE / ('venv-%s' % DDEV_VERSION)
    marker = env / '.installed'
    ddev = env / 'bin' / 'ddev'
    if marker.exists() and ddev.exists():
        return env
    print('==> installing ddev %s into %s' % (DDEV_VERSION, env.relative_to(ROOT)), flush=True)
    started = time.monotonic()
    subprocess.run([_python313(), '-m', 'venv', '--clear', str(env)], check=True)
    # pip's output is only worth reading when it fails (some machines' pip config warns once per package).
    done = subprocess.run(
        [
            str(env / 'bin' / 'python'),
            '-m',
            'pip',
            'install',
            '-q',
            '--disable-pip-version-check',
            'ddev==%s' % DDEV_VERSION,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit('error: pip could not install ddev==%s' % DDEV_VERSION)
    marker.write_text(DDEV_VERSION)
    print('==> ddev installed in %.0fs' % (time.monotonic() - started), flush=True)
    return env


def make_workspace(tree: Path, where: Path) -> Path:
    """A git repository that ddev takes for the `extras` repository, holding `gunicorn` -> tree."""
    repo = where / 'repo'
    repo.mkdir()
    (repo / CHECK).symlink_to(tree, target_is_directory=True)
    # ddev reads a .ddev.toml in the working directory as an override of its global config.
    (repo / '.ddev.toml').write_text('repo = "extras"\n\n[repos]\nextras = "%s"\n' % repo)
    # ddev finds the repository root through git.
    subprocess.run(['git', 'init', '-q', str(repo)], check=True)
    return repo


def run_validator(ddev: Path, repo: Path, env: dict[str, str], validator: Validator) -> tuple[bool, str]:
    done = subprocess.run(
        [str(ddev), '--no-interactive', '--no-color', 'validate', validator.name, CHECK],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = (done.stdout + done.stderr).strip()
    missing = [p for p in validator.evidence if not re.search(p, output)]
    if done.returncode != 0:
        return False, output + '\n(exit status %d)' % done.returncode
    if missing:
        return False, output + '\n(exit status 0, but no sign that gunicorn was validated: expected %s)' % ', '.join(
            repr(p) for p in missing
        )
    return True, output


def run_codespell(env_dir: Path, tree: Path) -> tuple[bool, str]:
    # `ddev validate typos` inverts its exit status (it aborts when codespell passes): run codespell itself, with the
    # repository's .codespellrc, from the tree so that its relative skip patterns apply.
    done = subprocess.run(
        [str(env_dir / 'bin' / 'codespell'), '--config', str(tree / '.codespellrc'), '.'],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        return False, output + '\n(exit status %d)' % done.returncode
    return True, output or 'no typos'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, default=ROOT, help='the integration tree to validate (default: this repo)')
    args = parser.parse_args(argv)
    tree = args.root.resolve()

    env_dir = install_ddev()
    ddev = env_dir / 'bin' / 'ddev'
    failed = []
    with tempfile.TemporaryDirectory(prefix='ddev-validate-') as tmp:
        tmp_path = Path(tmp)
        repo = make_workspace(tree, tmp_path)
        home = tmp_path / 'home'
        home.mkdir()
        env = dict(os.environ, HOME=str(home), NO_COLOR='1', DDEV_INTERACTIVE='false', COLUMNS='120')
        env.pop('DDEV_CONFIG', None)
        # Each ddev start costs about a second of imports and they share nothing: run a few at once.
        with ThreadPoolExecutor(max_workers=3) as pool:
            runs = [(v, pool.submit(run_validator, ddev, repo, env, v)) for v in validators(tree)]
            for validator, future in runs:
                ok, output = future.result()
                print('==> ddev validate %s: %s' % (validator.name, 'pass' if ok else 'FAIL'))
                print(_indent(output), flush=True)
                if not ok:
                    failed.append(validator.name)
        ok, output = run_codespell(env_dir, tree)
        print('==> codespell: %s' % ('pass' if ok else 'FAIL'))
        print(_indent(output), flush=True)
        if not ok:
            failed.append('codespell')
    if failed:
        print('FAILED: %s' % ', '.join(failed), file=sys.stderr)
        return 1
    print('All ddev validators and codespell passed for %s (ddev %s).' % (tree, DDEV_VERSION))
    return 0


def _indent(text: str) -> str:
    return '\n'.join('    ' + line for line in text.splitlines())


if __name__ == '__main__':
    sys.exit(main())
