"""The netstat and sock_diag modules for the tests, importable without datadog-checks-base.

Both modules use only the standard library, but `datadog_checks.gunicorn/__init__.py` imports the check, which
needs datadog-checks-base: where that is not installed (a bare test virtualenv on another Python), load them from
their files under a private name instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent.parent / 'datadog_checks' / 'gunicorn'


def load(name: str) -> ModuleType:
    try:
        return importlib.import_module(f'datadog_checks.gunicorn.{name}')
    except ImportError:
        spec = importlib.util.spec_from_file_location(f'gunicorn_standalone_{name}', PACKAGE_DIR / (f'{name}.py'))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # dataclasses resolve the module through sys.modules while the class body runs.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


netstat = load('netstat')
sock_diag = load('sock_diag')
