"""What the control socket's replies say: every shape and value a confused or hostile peer may send."""

from __future__ import annotations

import json
import math

import pytest

from datadog_checks.gunicorn.sources.control_socket.replies import (
    COUNT_MAX,
    ITEMS_MAX,
    PID_MAX,
    SECONDS_MAX,
    TEXT_MAX,
    BadReply,
    Config,
    Stats,
    dirty_heartbeat_ages,
    heartbeat_ages,
    parse_config,
    parse_listeners,
    parse_stats,
    web_heartbeat_ages,
    worker_class_name,
)

from .fakes import STATS

# Replies as Gunicorn 27.0.1 sends them (captured from a real master, pids changed).
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
WORKERS = {'workers': [{'pid': 7, 'age': 1, 'booted': False, 'aborted': False, 'last_heartbeat': 0.5}], 'count': 1}
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
LISTENERS = {'listeners': [{'address': 'http://127.0.0.1:8000', 'fd': 5, 'type': 'tcp'}], 'count': 1}


def test_what_gunicorn_sends():
    assert parse_stats(STATS) == Stats(
        pid=1000,
        uptime_seconds=2.07,
        workers_target=2,
        workers_spawned=2,
        workers_killed=0,
        reloads=0,
        dirty_arbiter_pid=1002,
    )
    assert parse_config(CONFIG) == Config('sync', 1, 30.0, 0, ('127.0.0.1:45169',), 1, ('dirty:Tasks',))
    assert parse_listeners(LISTENERS) == ('http://127.0.0.1:8000',)
    assert web_heartbeat_ages(WORKERS, uptime=10.0) == [0.5]
    assert dirty_heartbeat_ages(ALL, uptime=10.0) == [2.04]


@pytest.mark.parametrize('data', [None, [], 'x', 3, 2.5, True])
@pytest.mark.parametrize(
    'parse',
    [
        parse_stats,
        parse_config,
        parse_listeners,
        lambda data: web_heartbeat_ages(data, None),
        lambda data: dirty_heartbeat_ages(data, None),
    ],
)
def test_data_that_is_not_an_object_is_a_bad_reply(parse, data):
    with pytest.raises(BadReply, match='not an object'):
        parse(data)


def test_missing_and_unknown_fields():
    assert parse_stats({'surprise': {'nested': [1, 2]}}) == Stats(None, None, None, None, None, None, None)
    assert parse_config({}) == Config(None, None, None, None, (), None, ())
    assert parse_listeners({}) == () and parse_listeners({'listeners': 'x'}) == ()
    assert web_heartbeat_ages({}, None) == [] and web_heartbeat_ages({'workers': {}}, None) == []


# Every field of the stats, with what Gunicorn can and cannot report.
NOT_NUMBERS = ['1000', None, True, False, [1000], {'pid': 1000}, 1000.0]


@pytest.mark.parametrize('value', NOT_NUMBERS)
@pytest.mark.parametrize('field', ['pid', 'workers_target', 'workers_spawned', 'workers_killed', 'reloads'])
def test_counts_are_integers_only(field, value):
    stats = parse_stats(dict(STATS, **{field: value}))
    assert getattr(stats, field) is None
    assert stats.uptime_seconds == 2.07  # the rest of the reply is still used


@pytest.mark.parametrize(
    'field, low, high',
    [
        ('pid', 1, PID_MAX),
        ('dirty_arbiter_pid', 1, PID_MAX),
        ('workers_target', 0, PID_MAX),
        ('workers_spawned', 0, COUNT_MAX),
        ('workers_killed', 0, COUNT_MAX),
        ('reloads', 0, COUNT_MAX),
    ],
)
def test_numbers_outside_what_gunicorn_can_report_are_dropped(field, low, high):
    assert getattr(parse_stats(dict(STATS, **{field: low})), field) == low
    assert getattr(parse_stats(dict(STATS, **{field: high})), field) == high
    for beyond in (low - 1, high + 1, -(10**400), 10**400):
        assert getattr(parse_stats(dict(STATS, **{field: beyond})), field) is None


def test_integers_beyond_a_float_nan_and_infinities_are_dropped():
    # What Python's json module makes of what a peer may send: a 400-digit integer, NaN and infinities.
    data = json.loads('{"pid": 1000, "uptime": %s, "workers_target": NaN, "reloads": Infinity}' % ('9' * 400))
    stats = parse_stats(data)
    assert (stats.uptime_seconds, stats.workers_target, stats.reloads) == (None, None, None)
    for value in (float('nan'), float('inf'), -float('inf'), -1.0, SECONDS_MAX * 2, 10**400):
        assert parse_stats(dict(STATS, uptime=value)).uptime_seconds is None
        assert parse_config(dict(CONFIG, timeout=value)).timeout_seconds is None
    assert parse_stats(dict(STATS, uptime=3)).uptime_seconds == 3.0


def test_strings_where_numbers_belong_and_numbers_where_strings_belong():
    config = parse_config(dict(CONFIG, timeout='30', threads='4', worker_class=7, bind=8000, dirty_apps=[1, 'a:B']))
    assert (config.timeout_seconds, config.threads, config.worker_class) == (None, None, None)
    assert config.bind == () and config.dirty_apps == ('a:B',)
    assert parse_config(dict(CONFIG, bind='127.0.0.1:1')).bind == ('127.0.0.1:1',)  # one address as a string
    assert parse_config(dict(CONFIG, threads=0)).threads is None  # a worker has at least one thread


def test_texts_and_lists_are_bounded():
    config = parse_config(dict(CONFIG, worker_class='x' * (TEXT_MAX + 1), bind=['1.1.1.1:1'] * (ITEMS_MAX + 5)))
    assert config.worker_class is None and len(config.bind) == ITEMS_MAX
    many = {'listeners': [{'address': 'unix:/a'}] * (ITEMS_MAX + 1) + [{'address': ''}, {'address': 'y' * 2000}]}
    assert parse_listeners(many) == ('unix:/a',) * ITEMS_MAX
    assert parse_listeners({'listeners': ['junk', {'address': 7}, {'fd': 5}]}) == ()


@pytest.mark.parametrize(
    'entry, kept',
    [
        ({'pid': 7, 'last_heartbeat': 1.5}, [1.5]),
        ({'pid': 7, 'last_heartbeat': 2}, [2.0]),  # an integer number of seconds
        ({'pid': 7, 'last_heartbeat': 0.0}, [0.0]),
        ({'pid': 7, 'last_heartbeat': 100.0}, [100.0]),  # as old as the master: possible
        ({'pid': 7, 'last_heartbeat': 100.5}, []),  # older than the master: not possible
        ({'pid': 7, 'last_heartbeat': -299260051.0}, []),  # a fresh fork against another clock (seen in the soak)
        ({'pid': 7, 'last_heartbeat': float('nan')}, []),
        ({'pid': 7, 'last_heartbeat': float('inf')}, []),
        ({'pid': 7, 'last_heartbeat': 10**400}, []),
        ({'pid': 7, 'last_heartbeat': '1.5'}, []),
        ({'pid': 7, 'last_heartbeat': None}, []),
        ({'pid': 7, 'last_heartbeat': True}, []),
        ({'pid': 7}, []),
        ({'pid': None, 'last_heartbeat': 1.0}, []),  # an entry without a pid is no worker's
        ({'pid': '7', 'last_heartbeat': 1.0}, []),
        ({'pid': 0, 'last_heartbeat': 1.0}, []),
        ({'pid': PID_MAX + 1, 'last_heartbeat': 1.0}, []),
        ('junk', []),
        ([{'pid': 7, 'last_heartbeat': 1.0}], []),
    ],
)
def test_heartbeat_ages(entry, kept):
    assert heartbeat_ages([entry], uptime=100.0) == kept


def test_heartbeat_ages_without_an_uptime_keep_what_a_heartbeat_can_be():
    entries = [{'pid': 7, 'last_heartbeat': 5000.0}, {'pid': 8, 'last_heartbeat': SECONDS_MAX * 2}]
    assert heartbeat_ages(entries, uptime=None) == [5000.0]
    assert heartbeat_ages('not a list', uptime=None) == []


def test_every_reply_of_a_hostile_peer_is_contained():
    """Whatever the values, a parser returns figures within bounds or raises BadReply: nothing else escapes."""
    hostile = [None, True, -1, 0, 2**63, -(10**400), 10**400, math.nan, math.inf, '', 'x' * 5000, [], {}, [[[]]]]
    for value in hostile:
        for field in ('pid', 'uptime', 'workers_target', 'workers_spawned', 'reloads', 'dirty_arbiter_pid'):
            stats = parse_stats(dict(STATS, **{field: value}))
            for number in (stats.pid, stats.workers_target, stats.workers_spawned, stats.reloads):
                assert number is None or 0 <= number <= COUNT_MAX
            assert stats.uptime_seconds is None or 0 <= stats.uptime_seconds <= SECONDS_MAX
        for field in ('worker_class', 'threads', 'timeout', 'max_requests', 'bind', 'dirty_workers', 'dirty_apps'):
            config = parse_config(dict(CONFIG, **{field: value}))
            assert config.timeout_seconds is None or math.isfinite(config.timeout_seconds)
        entries = [{'pid': value, 'last_heartbeat': 1.0}, {'pid': 9, 'last_heartbeat': value}]
        assert all(0 <= age <= 100 for age in heartbeat_ages(entries, uptime=100.0))


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
    assert worker_class_name(raw) == short
