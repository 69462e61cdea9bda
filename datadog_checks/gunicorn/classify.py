"""Pure decisions about Gunicorn processes: what a title says a process is, and whether a worker was working.

No I/O and no clock here, so that every rule can be tested on its own.

Titles Gunicorn sets through setproctitle (gunicorn/arbiter.py, workers/base.py, dirty/arbiter.py):
`gunicorn: master [NAME]`, `gunicorn: worker [NAME]`, `gunicorn: dirty-arbiter`, `gunicorn: dirty-worker [NAME]`.
During a USR2 upgrade the new master and its workers carry `NAME.2` until the new master is promoted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

# The name may hold spaces, ':', '/' and brackets: everything between the first '[' and the last ']'.
# Only the dirty arbiter goes without a name (a later release may add one).
_TITLE = re.compile(r'gunicorn: (?:(master|worker|dirty-worker) \[(.*)\]|(dirty-arbiter)(?: \[(.*)\])?)\Z', re.DOTALL)
UPGRADE_SUFFIX = '.2'

# A worker counts as working when it spent at least this long on a CPU during the sample window. Idle workers
# wake up to refresh their heartbeat (sync: under 0.1 ms every timeout/2; gthread: about 0.2 ms each second,
# measured on Gunicorn 27.0.1); a request that computes anything costs more.
WORKING_MIN_CPU_NS = 2_000_000


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
        return Title(Role.DIRTY_ARBITER, match.group(4))
    return Title(Role(match.group(1)), match.group(2))


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


def is_worker_of(title: Title | None, app: str) -> bool:
    return title is not None and title.role is Role.WORKER and belongs_to(title, app)


@dataclass(frozen=True)
class WorkerCounts:
    working: int
    idle: int

    @property
    def total(self) -> int:
        return self.working + self.idle


def count_working(before_ns: Mapping[int, int], after_ns: Mapping[int, int], min_cpu_ns: int) -> WorkerCounts:
    """Split workers by the CPU time each used between two samples.

    Only workers sampled at both ends count: a worker that exited during the window is neither working nor idle,
    and one that appeared during it was not watched.
    """
    working = idle = 0
    for pid, start in before_ns.items():
        end = after_ns.get(pid)
        if end is None:
            continue
        if end - start >= min_cpu_ns:
            working += 1
        else:
            idle += 1
    return WorkerCounts(working, idle)
