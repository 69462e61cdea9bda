"""What Gunicorn's control-socket replies say, each value taken only within what Gunicorn can report.

The protocol carries any JSON. A field is used only when it has the type and the range Gunicorn gives it, and is
None (or left out) otherwise: a confused or hostile peer can cost a run its control-socket figures, never fail it or
put an invented number into a metric. A reply whose `data` is not a JSON object is no reply at all (`BadReply`).
Fields differ between Gunicorn versions: a missing one is None and unknown ones are ignored. Only the fields the
check sends something from are parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# PID_MAX_LIMIT (include/linux/threads.h): no process, hence no worker count, is above it.
PID_MAX = 4_194_304
# Counters grow for the master's life; beyond 2**53 a float metric would no longer carry them exactly.
COUNT_MAX = 2**53
# About 68 years: no uptime, timeout or heartbeat age is longer.
SECONDS_MAX = float(2**31)
# A worker class path, a bind address or an app name; a longer string is not one of Gunicorn's.
TEXT_MAX = 1024
# Binds, listeners or dirty apps of one server; more are not Gunicorn's either.
ITEMS_MAX = 1024


class BadReply(ValueError):
    """A reply whose `data` is not what the command answers: no figure can be taken from it."""


@dataclass(frozen=True)
class Stats:
    """`show stats`. `workers_killed` counts only SIGTERM/SIGKILL sent by the master itself."""

    pid: int | None  # in the master's own PID namespace
    uptime_seconds: float | None
    workers_target: int | None
    workers_spawned: int | None
    workers_killed: int | None
    reloads: int | None
    dirty_arbiter_pid: int | None


@dataclass(frozen=True)
class Config:
    """`show config`. `worker_class` is a short name (sync, gthread, gevent, tornado, asgi, eventlet) or the dotted
    path of a third-party class."""

    worker_class: str | None
    threads: int | None
    timeout_seconds: float | None
    max_requests: int | None
    bind: tuple[str, ...]
    dirty_workers: int | None
    dirty_apps: tuple[str, ...]


def _int(value: Any, low: int, high: int) -> int | None:
    # bool is an int subclass; JSON true is never a count.
    return value if type(value) is int and low <= value <= high else None


def _seconds(value: Any) -> float | None:
    if type(value) is int:
        value = float(value) if 0 <= value <= SECONDS_MAX else None
    elif type(value) is not float or not 0.0 <= value <= SECONDS_MAX:  # NaN and infinities fail the comparison
        return None
    return value


def _text(value: Any) -> str | None:
    return value if type(value) is str and 0 < len(value) <= TEXT_MAX else None


def _texts(value: Any) -> tuple[str, ...]:
    if type(value) is str:
        value = [value]
    if type(value) is not list:
        return ()
    return tuple(text for v in value[:ITEMS_MAX] if (text := _text(v)) is not None)


def _object(data: Any, command: str) -> dict:
    if type(data) is not dict:
        raise BadReply('%s answered with a JSON %s, not an object' % (command, type(data).__name__))
    return data


def parse_stats(data: Any) -> Stats:
    data = _object(data, 'show stats')
    return Stats(
        pid=_int(data.get('pid'), 1, PID_MAX),
        uptime_seconds=_seconds(data.get('uptime')),
        workers_target=_int(data.get('workers_target'), 0, PID_MAX),
        workers_spawned=_int(data.get('workers_spawned'), 0, COUNT_MAX),
        workers_killed=_int(data.get('workers_killed'), 0, COUNT_MAX),
        reloads=_int(data.get('reloads'), 0, COUNT_MAX),
        dirty_arbiter_pid=_int(data.get('dirty_arbiter_pid'), 1, PID_MAX),
    )


def heartbeat_ages(entries: Any, uptime: float | None) -> list[float]:
    """The seconds since each worker's last heartbeat, from the `workers` of `show workers` or the `dirty_workers`
    of `show all`; an entry without a pid or an age is left out.

    No worker's heartbeat is older than its master, nor in the future: a worker just forked can report one computed
    against another clock (the chaos soak saw -299,260,051 s). Parsed on every run for every worker, so the rules of
    _int and _seconds are inline here: a Python call per field cost more than the rest of the parsing.
    """
    if type(entries) is not list:
        return []
    limit = SECONDS_MAX if uptime is None else uptime
    ages = []
    for entry in entries:
        if type(entry) is not dict:
            continue
        pid = entry.get('pid')
        if type(pid) is not int or not 0 < pid <= PID_MAX:  # an entry without a pid is no worker's
            continue
        beat = entry.get('last_heartbeat')
        if type(beat) is int:
            if not 0 <= beat <= limit:
                continue
            beat = float(beat)
        elif type(beat) is not float or not 0.0 <= beat <= limit:  # NaN and infinities fail the comparison
            continue
        ages.append(beat)
    return ages


def web_heartbeat_ages(data: Any, uptime: float | None) -> list[float]:
    return heartbeat_ages(_object(data, 'show workers').get('workers'), uptime)


def dirty_heartbeat_ages(data: Any, uptime: float | None) -> list[float]:
    """From `show all`: the only command that lists dirty workers (`show dirty` never does in 27.0.1)."""
    return heartbeat_ages(_object(data, 'show all').get('dirty_workers'), uptime)


_WORKER_MODULES = {
    'gunicorn.workers.sync': 'sync',
    'gunicorn.workers.gthread': 'gthread',
    'gunicorn.workers.ggevent': 'gevent',
    'gunicorn.workers.gtornado': 'tornado',
    'gunicorn.workers.gasgi': 'asgi',
    'gunicorn.workers.geventlet': 'eventlet',
}
_SHORT_NAMES = frozenset(_WORKER_MODULES.values()) | {'gevent_wsgi', 'gevent_pywsgi'}


def worker_class_name(raw: str | None) -> str | None:
    """Short name of a worker class as `show config` sends it (`str()` of the class) or as configured."""
    if not raw:
        return None
    name = raw.strip()
    if name.startswith("<class '") and name.endswith("'>"):
        name = name[len("<class '") : -len("'>")]
    if name.startswith('egg:gunicorn#'):  # the old setuptools entry-point spelling
        name = name[len('egg:gunicorn#') :]
    if name in _SHORT_NAMES:
        return 'gevent' if name.startswith('gevent') else name
    module = name.rpartition('.')[0]
    return _WORKER_MODULES.get(module, name) or None


def parse_config(data: Any) -> Config:
    data = _object(data, 'show config')
    return Config(
        worker_class=worker_class_name(_text(data.get('worker_class'))),
        threads=_int(data.get('threads'), 1, PID_MAX),
        timeout_seconds=_seconds(data.get('timeout')),
        max_requests=_int(data.get('max_requests'), 0, COUNT_MAX),
        bind=_texts(data.get('bind')),
        dirty_workers=_int(data.get('dirty_workers'), 0, PID_MAX),
        dirty_apps=_texts(data.get('dirty_apps')),
    )


def parse_listeners(data: Any) -> tuple[str, ...]:
    """The addresses of `show listeners`: str() of each listener, `http://127.0.0.1:8000` or `unix:/path`."""
    entries = _object(data, 'show listeners').get('listeners')
    if type(entries) is not list:
        return ()
    return tuple(
        address for e in entries[:ITEMS_MAX] if type(e) is dict and (address := _text(e.get('address'))) is not None
    )
