"""Typed replies of the control socket: every shape and value a peer may send."""

from __future__ import annotations

from typing import TypeVar

import pytest

from datadog_checks.gunicorn.sources.control_socket import replies
from datadog_checks.gunicorn.sources.control_socket.client import (
    ControlSocketError,
)
from datadog_checks.gunicorn.sources.control_socket.replies import (
    heartbeat_ages,
)

from .fakes import STATS

E = TypeVar('E', bound=ControlSocketError)


# Typed replies

ALL = {
    'arbiter': {'pid': 1000, 'type': 'arbiter', 'role': 'master'},
    'web_workers': [
        {'pid': 1004, 'type': 'web', 'age': 2, 'booted': False, 'last_heartbeat': 2.02},
        {'pid': 1003, 'type': 'web', 'age': 1, 'booted': False, 'last_heartbeat': 2.0},
    ],
    'web_worker_count': 2,
    'dirty_arbiter': {'pid': 1002, 'type': 'dirty_arbiter', 'role': 'dirty master'},
    'dirty_workers': [{'pid': 1005, 'age': 1, 'apps': ['dirty:Tasks'], 'booted': False, 'last_heartbeat': 2.04}],
    'dirty_worker_count': 1,
}
CONFIG = {
    'bind': ['127.0.0.1:45169'],
    'workers': 2,
    'worker_class': "<class 'gunicorn.workers.sync.SyncWorker'>",
    'threads': 1,
    'timeout': 30,
    'graceful_timeout': 30,
    'keepalive': 2,
    'max_requests': 0,
    'max_requests_jitter': 0,
    'worker_connections': 1000,
    'preload_app': False,
    'daemon': False,
    'pidfile': None,
    'proc_name': 'app',
    'reload': False,
    'dirty_workers': 1,
    'dirty_apps': ['dirty:Tasks'],
    'dirty_timeout': 300,
    'control_socket': '/run/user/1000/gunicorn.ctl',
    'control_socket_disable': False,
}


def test_parse_stats():
    assert replies.parse_stats(STATS) == replies.Stats(
        pid=1000,
        uptime_seconds=2.07,
        workers_current=2,
        workers_target=2,
        workers_spawned=2,
        workers_killed=0,
        reloads=0,
        dirty_arbiter_pid=1002,
    )


def test_parse_all_sorts_by_age():
    processes = replies.parse_all(ALL)
    assert processes.arbiter_pid == 1000 and processes.dirty_arbiter_pid == 1002
    assert [(w.pid, w.age, w.last_heartbeat_seconds) for w in processes.web_workers] == [
        (1003, 1, 2.0),
        (1004, 2, 2.02),
    ]
    assert processes.dirty_workers == (
        replies.WorkerHeartbeat(pid=1005, age=1, last_heartbeat_seconds=2.04, apps=('dirty:Tasks',)),
    )


def test_parse_workers():
    data = {'workers': [{'pid': 7, 'age': 1, 'booted': False, 'aborted': False, 'last_heartbeat': 0.5}], 'count': 1}
    assert replies.parse_workers(data) == (replies.WorkerHeartbeat(pid=7, age=1, last_heartbeat_seconds=0.5),)


def test_parse_config():
    config = replies.parse_config(CONFIG)
    assert config.worker_class == 'sync' and config.worker_class_raw == CONFIG['worker_class']
    assert (config.workers, config.threads, config.worker_connections) == (2, 1, 1000)
    assert (config.timeout_seconds, config.graceful_timeout_seconds, config.keepalive_seconds) == (30.0, 30.0, 2.0)
    assert (config.max_requests, config.max_requests_jitter) == (0, 0)
    assert config.bind == ('127.0.0.1:45169',) and config.preload_app is False and config.proc_name == 'app'
    assert (config.dirty_workers, config.dirty_apps, config.dirty_timeout_seconds) == (1, ('dirty:Tasks',), 300.0)
    assert config.control_socket == '/run/user/1000/gunicorn.ctl'


def test_parse_listeners():
    data = {
        'listeners': [
            {'address': 'http://127.0.0.1:8000', 'fd': 5, 'type': 'tcp'},
            {'address': 'unix:/run/app.sock', 'fd': 6, 'type': 'unix'},
            'junk',
            {'address': 7, 'fd': '5'},
        ],
        'count': 4,
    }
    assert replies.parse_listeners(data) == (
        replies.Listener('http://127.0.0.1:8000', 5, 'tcp'),
        replies.Listener('unix:/run/app.sock', 6, 'unix'),
        replies.Listener(None, None, None),
    )


@pytest.mark.parametrize('data', [None, [], 'x', 3, {}, {'workers': 'x', 'web_workers': {}, 'listeners': None}])
def test_parsers_tolerate_any_shape(data):
    assert replies.parse_stats(data) == replies.Stats(None, None, None, None, None, None, None, None)
    assert replies.parse_all(data) == replies.Processes(None, (), None, ())
    assert replies.parse_workers(data) == ()
    assert replies.parse_listeners(data) == ()
    config = replies.parse_config(data)
    assert config.worker_class is None and config.bind == () and config.workers is None


def test_wrong_typed_fields_become_none():
    stats = replies.parse_stats(
        dict(STATS, pid='1000', uptime=float('nan'), workers_current=True, reloads=1.5, extra=1)
    )
    assert (stats.pid, stats.uptime_seconds, stats.workers_current, stats.reloads) == (None, None, None, None)
    assert stats.workers_target == 2
    config = replies.parse_config(dict(CONFIG, timeout='30', bind='127.0.0.1:1', preload_app=1, worker_class=None))
    assert config.timeout_seconds is None and config.preload_app is None and config.worker_class is None
    assert config.bind == ('127.0.0.1:1',)
    workers = replies.parse_all(
        {
            'web_workers': [
                {'pid': None, 'age': 1},
                {'pid': 5, 'age': 'old', 'last_heartbeat': float('inf')},
                {'pid': 6, 'age': 1, 'last_heartbeat': 1, 'apps': [1, 'a']},
            ]
        }
    ).web_workers
    assert workers == (replies.WorkerHeartbeat(6, 1, 1.0, ('a',)), replies.WorkerHeartbeat(5, None, None))


@pytest.mark.parametrize(
    'raw, short',
    [
        ("<class 'gunicorn.workers.sync.SyncWorker'>", 'sync'),
        ("<class 'gunicorn.workers.gthread.ThreadWorker'>", 'gthread'),
        ("<class 'gunicorn.workers.ggevent.GeventWorker'>", 'gevent'),
        ("<class 'gunicorn.workers.ggevent.GeventPyWSGIWorker'>", 'gevent'),
        ("<class 'gunicorn.workers.gtornado.TornadoWorker'>", 'tornado'),
        ("<class 'gunicorn.workers.gasgi.ASGIWorker'>", 'asgi'),
        ("<class 'gunicorn.workers.geventlet.EventletWorker'>", 'eventlet'),
        ("<class 'uvicorn.workers.UvicornWorker'>", 'uvicorn.workers.UvicornWorker'),
        ('gthread', 'gthread'),
        ('sync', 'sync'),
        ('gevent_pywsgi', 'gevent'),
        ('egg:gunicorn#gevent', 'gevent'),
        ('gunicorn.workers.gthread.ThreadWorker', 'gthread'),
        ('', None),
        (None, None),
    ],
)
def test_worker_class_name(raw, short):
    assert replies.worker_class_name(raw) == short


def reference_heartbeats(entries):
    """parse_workers' rules spelled with the per-field helpers, to check the inlined version against."""
    workers = []
    for entry in entries:
        entry = replies._dict(entry)
        pid = replies._int(entry.get('pid'))
        if pid is not None:
            workers.append(
                replies.WorkerHeartbeat(
                    pid,
                    replies._int(entry.get('age')),
                    replies._float(entry.get('last_heartbeat')),
                    replies._strs(entry.get('apps')),
                )
            )
    return tuple(sorted(workers, key=lambda w: (w.age is None, w.age or 0)))


def test_parse_workers_follows_the_field_rules_for_any_values():
    values = [
        None,
        True,
        False,
        0,
        1,
        2,
        -3,
        2**70,
        10**400,
        0.5,
        1.0,
        -2.5,
        float('nan'),
        float('inf'),
        '1',
        [],
        {},
        ['a', 1],
        'app',
    ]
    entries = [
        {'pid': pid, 'age': age, 'last_heartbeat': beat, 'apps': apps}
        for pid in values[:8]
        for age in values[:9]
        for beat in values
        for apps in (None, 'app', ['a', 1], 3)
    ]
    entries += ['junk', None, {}, {'pid': 9}, [1]]
    parsed = replies.parse_workers({'workers': entries})
    assert parsed == reference_heartbeats(entries)
    known = tuple(w.last_heartbeat_seconds for w in parsed if w.last_heartbeat_seconds is not None)
    assert heartbeat_ages({'workers': entries}) == known
    for data in (None, [], {}, {'workers': 'x'}, {'workers': [None]}):
        assert heartbeat_ages(data) == ()
    assert all(type(w.last_heartbeat_seconds) in (float, type(None)) for w in parsed)
