"""What a process title says about a Gunicorn process (gunicorn/arbiter.py, workers/base.py, dirty/arbiter.py).

Titles Gunicorn sets through setproctitle: `gunicorn: master [NAME]`, `gunicorn: worker [NAME]`,
`gunicorn: dirty-arbiter`, `gunicorn: dirty-worker [NAME]`. During a USR2 upgrade the new master and its workers carry
`NAME.2` until the new master is promoted. Pure functions: no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .redaction import app_name

# The name may hold spaces, ':', '/' and brackets: everything between the first '[' and the last ']'.
# Only the dirty arbiter goes without a name (a later release may add one).
_TITLE = re.compile(r'gunicorn: (?:(master|worker|dirty-worker) \[(.*)\]|(dirty-arbiter)(?: \[(.*)\])?)\Z', re.DOTALL)
UPGRADE_SUFFIX = '.2'


class Role(enum.Enum):
    MASTER = 'master'
    WORKER = 'worker'
    DIRTY_ARBITER = 'dirty-arbiter'
    DIRTY_WORKER = 'dirty-worker'


@dataclass(frozen=True)
class Title:
    role: Role
    name: str | None


def parse_title(title: str) -> Title | None:
    """What a process title says about a Gunicorn process, or None for anything else (including raw argv)."""
    match = _TITLE.match(title)
    if match is None:
        return None
    if match.group(3):
        return Title(Role.DIRTY_ARBITER, _shown(match.group(4)))
    return Title(Role(match.group(1)), _shown(match.group(2)))


def _shown(name: str | None) -> str | None:
    """The name as the check shows and matches it: an app given as a factory call loses its call arguments, which
    may carry secrets (see redaction.py), with or without the upgrade suffix."""
    if name is not None and name.endswith(UPGRADE_SUFFIX):
        return app_name(name[: -len(UPGRADE_SUFFIX)]) + UPGRADE_SUFFIX
    return app_name(name)


def base_name(name: str | None) -> str | None:
    """The application name without the USR2 upgrade suffix."""
    if name is not None and name.endswith(UPGRADE_SUFFIX):
        return name[: -len(UPGRADE_SUFFIX)]
    return name


def belongs_to(title: Title, app: str) -> bool:
    """Whether a titled process serves `app`: its own name, or the name of a master being upgraded to."""
    return title.name == app or base_name(title.name) == app


def is_master_of(title: Title | None, app: str) -> bool:
    return title is not None and title.role is Role.MASTER and belongs_to(title, app)
