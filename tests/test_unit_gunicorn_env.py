"""The test servers' helpers, where they need no server: where the cached Gunicorn virtualenvs live."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .gunicorn_env import REPO, cache_dir


def test_a_relative_cache_resolves_against_the_directory_it_is_read_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cache_dir({'GUNICORN_TEST_CACHE': '.cache'}) == Path.cwd() / '.cache'


def test_an_absolute_cache_is_kept_and_the_default_is_the_repository_s(tmp_path):
    assert cache_dir({'GUNICORN_TEST_CACHE': str(tmp_path)}) == tmp_path
    assert cache_dir({}) == REPO / '.cache'


def test_a_relative_cache_is_absolute_from_import_on(tmp_path):
    # The documented failure: `GUNICORN_TEST_CACHE=.cache python scripts/benchmark.py` imported a relative CACHE, and
    # Gunicorn, started in its own directory, was then looked for under that directory.
    env = dict(os.environ, GUNICORN_TEST_CACHE='.cache', PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, '-c', 'from tests.gunicorn_env import CACHE; print(CACHE)'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(done.stdout.strip()) == Path(os.path.realpath(tmp_path)) / '.cache'
