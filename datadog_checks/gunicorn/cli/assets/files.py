"""Where the integration's asset files are, and reading them.

The repository's top-level `assets/` folder is the only source of the dashboard, monitors, log pipeline and saved
views. A wheel carries a copy of the ones the installer needs under `datadog_checks/gunicorn/assets/` (setup.py copies
them at build time), because `agent integration install` installs Python packages only: a user running the installer
with the Agent's embedded Python has no clone of the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# datadog_checks/gunicorn: this file is cli/assets/files.py under it.
PACKAGE_DIR = Path(__file__).resolve().parents[2]
# What the wheel carries, relative to the assets folder. setup.py keeps its own copy (it cannot import the package at
# build time); a test checks that the two agree.
SHIPPED = ('dashboards', 'monitors', 'logs/gunicorn.yaml', 'saved_views')
PIPELINE_FILE = 'logs/gunicorn.yaml'


class AssetError(Exception):
    """An asset file is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class AssetFile:
    """One asset: its identity (the file name without extension, stable across edits of its content) and content."""

    asset_id: str
    path: Path
    content: Any


@dataclass(frozen=True)
class Assets:
    root: Path
    dashboards: tuple[AssetFile, ...]
    monitors: tuple[AssetFile, ...]
    pipeline: AssetFile
    saved_views: tuple[AssetFile, ...]


def find_assets_dir() -> Path:
    """The packaged copy in an installed wheel, else the `assets/` folder of the repository this package sits in."""
    candidates = (PACKAGE_DIR / 'assets', PACKAGE_DIR.parent.parent / 'assets')
    for candidate in candidates:
        if (candidate / PIPELINE_FILE).is_file() and (candidate / 'monitors').is_dir():
            return candidate
    raise AssetError(
        'the integration assets were not found in %s: install the wheel built by setup.py, or run from a clone of '
        'the repository' % ' or '.join(str(c) for c in candidates)
    )


def load_assets(root: Path | None = None) -> Assets:
    root = find_assets_dir() if root is None else root
    return Assets(
        root=root,
        dashboards=_load_folder(root / 'dashboards', _read_json),
        monitors=_load_folder(root / 'monitors', _read_json),
        pipeline=AssetFile('gunicorn', root / PIPELINE_FILE, _read_yaml(root / PIPELINE_FILE)),
        saved_views=_load_folder(root / 'saved_views', _read_json),
    )


def _load_folder(folder: Path, read) -> tuple[AssetFile, ...]:
    if not folder.is_dir():
        raise AssetError('asset folder %s is missing' % folder)
    files = sorted(folder.glob('*.json'))
    if not files:
        raise AssetError('asset folder %s has no .json file' % folder)
    return tuple(AssetFile(path.stem, path, read(path)) for path in files)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise AssetError('cannot read %s: %s' % (path, exc)) from exc


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as exc:
        raise AssetError('cannot read %s: %s' % (path, exc)) from exc
