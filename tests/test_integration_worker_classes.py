"""What each source gives per worker class, measured on real Gunicorn 27.0.1: the README's "Worker classes" table.

One server per class (one worker, an access log, `--statsd-host` on a loopback listener standing in for DogStatsD)
serves a 200, a 404 and a 503, then holds one request open while the check runs. Measured for each class: whether the
check sees its worker, the request in flight and the worker's heartbeat; whether Gunicorn's StatsD sends request
metrics; which access format the log pipeline reads, and the attributes it takes from a line. The README's row must be
what was measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from .common import instance_for, wait_for
from .gunicorn_env import REPO
from .logs.grok import load_pipeline
from .test_integration_statsd import Listener, get

pytestmark = pytest.mark.integration

FASTAPI = 'fastapi_app:app'
# The README's rows: `-k` value -> how the server runs. Gunicorn's own classes serve the WSGI test application, the
# ASGI ones the FastAPI one with the same routes.
CLASSES = {
    'sync': {},
    'gthread': {'args': ['-k', 'gthread', '--threads', '4']},
    'gevent': {'args': ['-k', 'gevent']},
    'tornado': {'args': ['-k', 'tornado']},
    'asgi': {'args': ['-k', 'asgi'], 'app': FASTAPI},
    'uvicorn_worker.UvicornWorker': {'args': ['-k', 'uvicorn_worker.UvicornWorker'], 'app': FASTAPI},
    'uvicorn.workers.UvicornWorker': {'args': ['-k', 'uvicorn.workers.UvicornWorker'], 'app': FASTAPI},
}
REQUESTS = (('/', 200), ('/status/404', 404), ('/status/503', 503))
# What Gunicorn's StatsD sends for those requests (a timer is stored as .count and the rest).
STATSD_REQUEST_METRICS = {
    'gunicorn.requests',
    'gunicorn.request.duration.count',
    *('gunicorn.request.status.%d' % status for _, status in REQUESTS),
}
ACCESS_FORMATS = {'access.combined': "Gunicorn's", 'access.common': "Gunicorn's", 'access.uvicorn': "uvicorn's"}
FORMAT_PARSER = 'Parsing Gunicorn access and error logs'


@dataclass(frozen=True)
class Row:
    check: frozenset[str]  # what the check saw of the busy worker: 'workers', 'in flight', 'heartbeats'
    statsd: str  # 'yes' when Gunicorn's StatsD sent request metrics
    access_format: str  # whose access format the file has, or 'none' when no line is written
    attributes: frozenset[str]  # what the pipeline's format rule extracts from the 200's line


def readme_rows() -> dict[str, Row]:
    """The rows `| `class` | seen, seen | statsd | format | `attr` ... |` of the README's "Worker classes"."""
    text = (REPO / 'README.md').read_text(encoding='utf-8')
    section = text.split('### Worker classes', 1)[1].split('\n### ', 1)[0]
    rows = re.findall(
        r"^\| `([^`]+)` \| ([a-z ,]+) \| (yes|no) \| (Gunicorn's|uvicorn's|none) \| ([^|]*)\|$", section, re.M
    )
    return {
        name: Row(frozenset(check.split(', ')), statsd, access, frozenset(re.findall(r'`([\w.]+)`', attributes)))
        for name, check, statsd, access, attributes in rows
    }


@pytest.fixture
def listener():
    with Listener.on_loopback() as found:
        yield found


def test_the_readme_has_a_row_per_class():
    assert set(readme_rows()) == set(CLASSES)


def check_run(check, aggregator, dd_run_check, sent: dict) -> bool:
    """One run; True once it saw the worker and the connection in flight, and the control socket answered (it sends
    the worker target whenever it does, so a missing heartbeat age is then the worker's, not the socket's)."""
    aggregator.reset()
    dd_run_check(check)
    sent.clear()
    sent.update({name: [m.value for m in aggregator.metrics(name)] for name in aggregator.metric_names})
    return (
        sum(sent.get('gunicorn.workers', [])) == 1
        and sent.get('gunicorn.connections.in_flight') == [1]
        and bool(sent.get('gunicorn.workers.target'))
    )


@pytest.mark.parametrize('worker_class', sorted(CLASSES))
def test_what_each_source_gives(worker_class, gunicorn, listener, make_check, aggregator, dd_run_check):
    expected = readme_rows()[worker_class]
    how = CLASSES[worker_class]
    # The request held open below must neither be timed out while the check runs nor hold the server's stop.
    args = [*how.get('args', []), '--statsd-host', listener.address, '--timeout', '120', '--graceful-timeout', '1']
    server = gunicorn(workers=1, app=how.get('app', 'app:app'), args=args, workers_packages=True)
    for path, status in REQUESTS:
        assert get(server.port, path) == status

    if expected.access_format == 'none':
        # Tornado prints its own line for a 4xx to stderr once the request is done: then an access line would be there.
        wait_for(lambda: '/status/404' in server.output.read_text(), 30, "tornado's own line for the 404")
        lines = server.access_log.read_text().splitlines()
        access_format, attributes = ('none' if not lines else 'written'), frozenset()
    else:
        wait_for(lambda: len(server.access_log.read_text().splitlines()) == len(REQUESTS), 30, 'the access lines')
        logs = [load_pipeline().process(line) for line in server.access_log.read_text().splitlines()]
        [access_format] = {ACCESS_FORMATS.get(log.matched.get(FORMAT_PARSER), 'unparsed') for log in logs}
        ok = next(log for log in logs if log.attributes.get('http', {}).get('status_code') == 200)
        attributes = frozenset(load_pipeline().grok_processors[0].parser.parse(ok.message)[1])

    if expected.statsd == 'yes':
        listener.wait_for_names(STATSD_REQUEST_METRICS)
    # Gunicorn's StatsD sends request metrics from its access logger, right after it writes the line: by now they are
    # here for every class that sends them.
    statsd = 'yes' if STATSD_REQUEST_METRICS & set(listener.names()) else 'no'

    # Longer than the wait below: the request must still be in flight on the run that is measured.
    server.hold('/sleep/60', timeout=90)
    check = make_check(instance_for(server, tags=[]))
    sent: dict = {}
    try:
        wait_for(lambda: check_run(check, aggregator, dd_run_check, sent), 30, 'the worker and the request in flight')
    except AssertionError as exc:
        raise AssertionError('%s; the last run sent %s' % (exc, sent)) from exc
    aggregator.assert_service_check('gunicorn.is_running', check.OK)
    seen = {'workers', 'in flight'} | ({'heartbeats'} if sent.get('gunicorn.worker.heartbeat_age.max') else set())

    assert Row(frozenset(seen), statsd, access_format, attributes) == expected
