"""The version metadata: once per master, from its installation or from the configured `gunicorn` command."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..sources.procfs import ProcError, ProcessKey, ProcFS
from ..sources.version import VersionError, installed_version, read_version
from .discovery import AppTree

DEFAULT_COMMAND = 'gunicorn'


@dataclass
class VersionFound:
    version: str | None
    problem: str | None = None  # why no version could be read (the check words the warning: messages.py)
    master_pid: int | None = None


class VersionReader:
    """`configured`, the `gunicorn` option, overrides the master's installation; without it the installation is read
    and `gunicorn --version` from the Agent's PATH is the last resort (a subprocess costs ~100 ms)."""

    def __init__(self, procfs: ProcFS, log: logging.Logger | logging.LoggerAdapter, configured: str | None):
        self.procfs = procfs
        self.log = log
        self.configured = configured
        self._for: ProcessKey | None = None

    def read(self, trees: list[AppTree]) -> VersionFound | None:
        """The version of the oldest master, the first time it is seen; None when it was read already."""
        tree = min(trees, key=lambda t: t.master.pid)
        if tree.master.key == self._for:
            return None
        self._for = tree.master.key
        if self.configured:
            try:
                return VersionFound(read_version(self.configured))
            except VersionError as exc:
                return VersionFound(None, 'the `gunicorn` option failed: %s' % exc, tree.master.pid)
        argv = () if tree.titled else self._argv(tree)
        try:
            return VersionFound(installed_version(self.procfs, tree.master.pid, argv))
        except VersionError as exc:
            from_master = str(exc)
        try:
            return VersionFound(read_version(DEFAULT_COMMAND))
        except VersionError as exc:
            self.log.debug('Gunicorn version of master %s: %s; %s', tree.master.pid, from_master, exc)
        return VersionFound(
            None,
            "%s, and `gunicorn` is not on the Agent's PATH. Set the `gunicorn` option to the application's own "
            '(for example /srv/app/venv/bin/gunicorn)' % from_master,
            tree.master.pid,
        )

    def _argv(self, tree: AppTree) -> tuple[str, ...]:
        try:
            return tuple(self.procfs.read_cmdline(tree.master.pid))
        except ProcError:
            return ()  # gone: the next master's turn comes
