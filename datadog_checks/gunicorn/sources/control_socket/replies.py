"""Typed replies of Gunicorn's control socket, parsed from the JSON `data` of each `show` command.

Fields differ between Gunicorn versions, so the parsers never raise: a missing or wrongly typed field becomes None (or
an empty tuple) and unknown fields are ignored.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stats:
    """`show stats`. `workers_killed` counts only SIGTERM/SIGKILL sent by the master itself."""

    pid: int | None
    uptime_seconds: float | None
    workers_current: int | None
    workers_target: int | None
    workers_spawned: int | None
    workers_killed: int | None
    reloads: int | None
    dirty_arbiter_pid: int | None


@dataclass(frozen=True)
class WorkerHeartbeat:
    """One web or dirty worker. `age` is the spawn order (1 = oldest), not a duration. Gunicorn's `booted` is
    always false in 27.0.1, so it is not exposed."""

    pid: int
    age: int | None
    last_heartbeat_seconds: float | None
    apps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Processes:
    """`show all`: the only command that lists dirty workers (`show dirty` never does in 27.0.1)."""

    arbiter_pid: int | None
    web_workers: tuple[WorkerHeartbeat, ...]
    dirty_arbiter_pid: int | None
    dirty_workers: tuple[WorkerHeartbeat, ...]


@dataclass(frozen=True)
class Config:
    """`show config`. `worker_class` is a short name (sync, gthread, gevent, tornado, asgi, eventlet) or the dotted
    path of a third-party class; `worker_class_raw` is what the server sent."""

    worker_class: str | None
    worker_class_raw: str | None
    workers: int | None
    threads: int | None
    timeout_seconds: float | None
    graceful_timeout_seconds: float | None
    keepalive_seconds: float | None
    max_requests: int | None
    max_requests_jitter: int | None
    worker_connections: int | None
    bind: tuple[str, ...]
    preload_app: bool | None
    proc_name: str | None
    dirty_workers: int | None
    dirty_apps: tuple[str, ...]
    dirty_timeout_seconds: float | None
    control_socket: str | None


@dataclass(frozen=True)
class Listener:
    """`show listeners`. `address` is str() of the listener: `http://127.0.0.1:8000` or `unix:/path`."""

    address: str | None
    fd: int | None
    type: str | None  # tcp, tcp6, unix or unknown


def _int(value: Any) -> int | None:
    # bool is an int subclass; JSON true is never a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range, which JSON allows
        return None
    # Python's json module accepts NaN and Infinity.
    return value if math.isfinite(value) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _strs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def parse_stats(data: Any) -> Stats:
    data = _dict(data)
    return Stats(
        pid=_int(data.get('pid')),
        uptime_seconds=_float(data.get('uptime')),
        workers_current=_int(data.get('workers_current')),
        workers_target=_int(data.get('workers_target')),
        workers_spawned=_int(data.get('workers_spawned')),
        workers_killed=_int(data.get('workers_killed')),
        reloads=_int(data.get('reloads')),
        dirty_arbiter_pid=_int(data.get('dirty_arbiter_pid')),
    )


def _heartbeats(entries: Any) -> tuple[WorkerHeartbeat, ...]:
    # Parsed on every run for every worker, so the checks are inline rather than through _int/_float/_strs: the same
    # rules, without a Python call per field. `type(x) is int` excludes bool; JSON gives no other int or float type.
    if not isinstance(entries, list):
        return ()
    keyed = []
    for position, entry in enumerate(entries):
        if type(entry) is not dict:
            continue
        pid = entry.get('pid')
        if type(pid) is not int:  # an entry without a pid cannot be joined to a process
            continue
        age = entry.get('age')
        if type(age) is not int:
            age = None
        beat = entry.get('last_heartbeat')
        if type(beat) is float:
            if beat - beat != 0.0:  # NaN and infinities, which Python's json module accepts
                beat = None
        elif beat is not None:
            beat = _float(beat)
        apps = entry.get('apps')
        worker = WorkerHeartbeat(pid, age, beat, () if apps is None else _strs(apps))
        # Oldest first, as the server sorts them; unknown ages last; the position keeps equal ages in their order.
        keyed.append((age is None, age or 0, position, worker))
    keyed.sort()
    return tuple(map(_LAST, keyed))


_LAST = operator.itemgetter(3)


def parse_workers(data: Any) -> tuple[WorkerHeartbeat, ...]:
    return _heartbeats(_dict(data).get('workers'))


def heartbeat_ages(data: Any) -> tuple[float, ...]:
    """The known `last_heartbeat_seconds` of parse_workers(data), in the same order, without a WorkerHeartbeat each.

    The check needs only these, on every run: building the objects cost it more than the rest of the parsing (a
    cold run, 16 workers). The same rules as _heartbeats, which test_unit_control_socket checks on every shape.
    """
    entries = _dict(data).get('workers')
    if not isinstance(entries, list):
        return ()
    keyed = []
    for position, entry in enumerate(entries):
        if type(entry) is not dict or type(entry.get('pid')) is not int:
            continue
        beat = entry.get('last_heartbeat')
        if type(beat) is float:
            if beat - beat != 0.0:
                continue
        elif beat is None or (beat := _float(beat)) is None:
            continue
        age = entry.get('age')
        if type(age) is not int:
            age = None
        keyed.append((age is None, age or 0, position, beat))
    keyed.sort()
    return tuple(map(_LAST, keyed))


def parse_all(data: Any) -> Processes:
    data = _dict(data)
    return Processes(
        arbiter_pid=_int(_dict(data.get('arbiter')).get('pid')),
        web_workers=_heartbeats(data.get('web_workers')),
        dirty_arbiter_pid=_int(_dict(data.get('dirty_arbiter')).get('pid')),
        dirty_workers=_heartbeats(data.get('dirty_workers')),
    )


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
    return _WORKER_MODULES.get(module, name)


def parse_config(data: Any) -> Config:
    data = _dict(data)
    raw_class = _str(data.get('worker_class'))
    return Config(
        worker_class=worker_class_name(raw_class),
        worker_class_raw=raw_class,
        workers=_int(data.get('workers')),
        threads=_int(data.get('threads')),
        timeout_seconds=_float(data.get('timeout')),
        graceful_timeout_seconds=_float(data.get('graceful_timeout')),
        keepalive_seconds=_float(data.get('keepalive')),
        max_requests=_int(data.get('max_requests')),
        max_requests_jitter=_int(data.get('max_requests_jitter')),
        worker_connections=_int(data.get('worker_connections')),
        bind=_strs(data.get('bind')),
        preload_app=_bool(data.get('preload_app')),
        proc_name=_str(data.get('proc_name')),
        dirty_workers=_int(data.get('dirty_workers')),
        dirty_apps=_strs(data.get('dirty_apps')),
        dirty_timeout_seconds=_float(data.get('dirty_timeout')),
        control_socket=_str(data.get('control_socket')),
    )


def parse_listeners(data: Any) -> tuple[Listener, ...]:
    entries = _dict(data).get('listeners')
    return tuple(
        Listener(address=_str(e.get('address')), fd=_int(e.get('fd')), type=_str(e.get('type')))
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict)
    )
