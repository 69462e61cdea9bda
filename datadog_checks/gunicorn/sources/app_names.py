"""The name of the application a Gunicorn master serves, as its title shows it or as Gunicorn would title it.

A titled master carries its name (titles.py). An untitled one (no setproctitle, or a `--preload` app still importing)
will be titled with Gunicorn's `proc_name` setting, which Gunicorn takes, highest first (gunicorn/app/base.py
`load_config`): from the command line (`--name`/`-n`), from `GUNICORN_CMD_ARGS` in the master's environment, from the
configuration file (`-c FILE`, else `gunicorn.conf.py` in the working directory), and without any of them from the
application (`default_proc_name`, app/wsgiapp.py: the APP_MODULE as written, such as `myproject.wsgi:application`).
The environment and the configuration file are read only where the Agent has ptrace-level access to the master;
elsewhere the name falls through to the application, and `AppName.source` says which rule named it.

A configuration file is Python: it is never run, only parsed, and only a top-level `proc_name = '<literal>'` counts.
"""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass

from .cmdline import GunicornCommand, parse_gunicorn
from .procfs import ProcError, ProcFS
from .redaction import app_name

ENVIRONMENT_VARIABLE = 'GUNICORN_CMD_ARGS'
DEFAULT_CONFIG_FILE = 'gunicorn.conf.py'  # gunicorn/config.py get_default_config_file, 20.0+
# A configuration file is a few kilobytes; the bound keeps a huge file from costing a run.
CONFIG_FILE_MAX_BYTES = 256 * 1024
# `-c python:package.module` names a module to import, which the check cannot read without running it.
_MODULE_PREFIX = 'python:'

FROM_TITLE = 'its title'
FROM_NAME_OPTION = '--name on its command line'
FROM_ENVIRONMENT = 'proc_name in GUNICORN_CMD_ARGS'
FROM_CONFIG_FILE = 'proc_name in its configuration file'
FROM_APPLICATION = 'the application on its command line'
FROM_DEFAULT = "Gunicorn's default name"


@dataclass(frozen=True)
class AppName:
    name: str
    source: str  # one of the FROM_ sentences: which rule gave the name, for diagnose


def titled_name(name: str) -> AppName:
    return AppName(name, FROM_TITLE)


def untitled_name(procfs: ProcFS, pid: int, command: GunicornCommand) -> AppName:
    """The name Gunicorn will give master `pid`, which runs `command` and has no title yet."""
    if command.name:
        return AppName(command.name, FROM_NAME_OPTION)
    environment = _environment_command(procfs, pid)
    if environment is not None and environment.name:
        return AppName(environment.name, FROM_ENVIRONMENT)
    config = command.last('--config') or (environment.last('--config') if environment is not None else None)
    configured = _config_file_name(procfs, pid, config or DEFAULT_CONFIG_FILE)
    if configured:
        return AppName(configured, FROM_CONFIG_FILE)
    if command.app:
        return AppName(command.app, FROM_APPLICATION)
    return AppName(command.proc_name, FROM_DEFAULT)


def _environment_command(procfs: ProcFS, pid: int) -> GunicornCommand | None:
    try:
        value = procfs.read_environ(pid, frozenset({ENVIRONMENT_VARIABLE})).get(ENVIRONMENT_VARIABLE)
    except ProcError:
        return None  # no ptrace access, or gone: the next rule names it
    if not value:
        return None
    try:
        words = shlex.split(value)  # Gunicorn splits it the same way (config.py get_cmd_args_from_env)
    except ValueError:
        return None
    return parse_gunicorn(['gunicorn', *words])


def _config_file_name(procfs: ProcFS, pid: int, path: str) -> str | None:
    if path.startswith(_MODULE_PREFIX):
        return None
    try:
        source = procfs.read_file_of(pid, path, CONFIG_FILE_MAX_BYTES)
    except ProcError:
        return None
    return parse_config_proc_name(source)


def parse_config_proc_name(source: bytes) -> str | None:
    """The literal `proc_name` a Gunicorn configuration file assigns at its top level (the last one), or None."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    found = None
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, 'value', None)
        for target in targets:
            if isinstance(target, ast.Name) and target.id == 'proc_name':
                is_text = isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.strip()
                # A name computed at run time cannot be known without running the file: fall through.
                found = app_name(value.value) if is_text else None
    return found
