"""Gunicorn's own StatsD output (--statsd-host) against metadata.csv, for every Gunicorn version the tests cover.

A UDP listener on loopback stands in for DogStatsD. Real servers get real traffic; every datagram is parsed, expanded
into the names DogStatsD would store (a timer or histogram becomes .avg, .median, .max and .95percentile gauges plus a
.count rate; a counter becomes a rate; a gauge stays a gauge), and each name must be a row of metadata.csv with that
type. In the other direction, every row that says it comes from Gunicorn's StatsD must be sent by some run below or be
explained in NOT_ALWAYS_SENT, and no metric of the check may take a StatsD name (both arrive on the same host).
"""

from __future__ import annotations

import contextlib
import csv
import http.client
import os
import re
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from .common import wait_for
from .gunicorn_env import GUNICORN_VERSIONS, REPO, running

pytestmark = pytest.mark.integration

# name:value|type[|@rate][|#tag,tag] - the DogStatsD datagram format Gunicorn writes, one metric per datagram.
DATAGRAM = re.compile(
    r'(?P<name>[\w.]+):(?P<value>-?\d+(?:\.\d+)?)\|(?P<type>c|g|ms|h)(?:\|@(?P<rate>[\d.]+))?'
    r'(?:\|#(?P<tags>[^|]*))?'
)
DISTRIBUTION_SUFFIXES = ('avg', 'median', 'max', '95percentile')

# Everything Gunicorn's instrument/statsd.py can send, as DogStatsD stores it.
STATSD_NAMES = re.compile(
    r'gunicorn\.(requests|request\.status\.\d{3}|workers|log\.(critical|error|warning|exception)'
    r'|(request\.duration|backlog)\.(avg|median|max|95percentile|count))'
)
STATUS_ROW = re.compile(r'gunicorn\.request\.status\.(\d{3})')

# StatsD rows a run of test_statsd_matches_metadata does not necessarily produce, and why.
NOT_ALWAYS_SENT = {
    'gunicorn.backlog.': 'only with --enable-backlog-metric (24.1+): test_prefix_tags_and_backlog checks them',
    'gunicorn.log.error': '20.1 logs nothing at ERROR for this traffic: it reports a killed worker as a WARNING',
}


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split('.'))


def metadata() -> dict[str, dict]:
    with open(REPO / 'metadata.csv', newline='') as f:
        return {row['metric_name']: row for row in csv.DictReader(f)}


def statsd_rows() -> dict[str, dict]:
    """Rows that say they come from Gunicorn's StatsD (gunicorn.workers says both: the check sends it too)."""
    return {name: row for name, row in metadata().items() if 'StatsD' in row['description']}


def expand(name: str, kind: str) -> dict[str, str]:
    """The metrics DogStatsD stores for one datagram, with their in-app metric_type."""
    if kind in ('ms', 'h'):
        return {**{f'{name}.{s}': 'gauge' for s in DISTRIBUTION_SUFFIXES}, f'{name}.count': 'rate'}
    return {name: {'c': 'rate', 'g': 'gauge'}[kind]}


@dataclass
class Datagram:
    name: str
    value: float
    kind: str
    rate: str | None
    tags: str | None


@dataclass
class Listener:
    """A UDP socket on a random loopback port that keeps every datagram it receives."""

    sock: socket.socket
    received: list[Datagram] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def on_loopback(cls) -> Iterator[Listener]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(('127.0.0.1', 0))
            sock.setblocking(False)
            yield cls(sock)

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f'{host}:{port}'

    def drain(self) -> list[Datagram]:
        while True:
            try:
                payload = self.sock.recv(65536)
            except BlockingIOError:
                return self.received
            for line in payload.decode('ascii').splitlines():
                parsed = DATAGRAM.fullmatch(line)
                assert parsed, f'not a StatsD line: {line!r}'
                self.received.append(
                    Datagram(parsed['name'], float(parsed['value']), parsed['type'], parsed['rate'], parsed['tags'])
                )

    def names(self, prefix: str = '') -> dict[str, str]:
        """Stored name -> metric_type, the prefix removed, for everything received so far."""
        stored: dict[str, str] = {}
        for datagram in self.drain():
            assert datagram.name.startswith(prefix), datagram
            stored.update(expand(datagram.name[len(prefix) :], datagram.kind))
        return stored

    def wait_for_names(self, wanted: set[str], prefix: str = '', timeout: float = 30.0) -> dict[str, str]:
        wait_for(lambda: wanted <= set(self.names(prefix)), timeout, f'StatsD names {sorted(wanted)}')
        return self.names(prefix)


@pytest.fixture
def listener():
    with Listener.on_loopback() as found:
        yield found


def assert_in_metadata(stored: dict[str, str]) -> None:
    rows = metadata()
    for name, kind in stored.items():
        assert name in rows, f'{name} is sent by Gunicorn but missing from metadata.csv'
        assert rows[name]['metric_type'] == kind, f'{name}: metadata.csv says {rows[name]["metric_type"]}, not {kind}'


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    try:
        conn.request('GET', path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize('version', GUNICORN_VERSIONS)
def test_statsd_matches_metadata(tmp_path, version, listener):
    """200s, a 404, a 500 from a handler exception, a 503, a worker timeout and a killed worker."""
    args = ['--statsd-host', listener.address, '--timeout', '2']
    with running(tmp_path, version=version, workers=2, args=args) as server:
        for path, status in (('/', 200), ('/', 200), ('/status/404', 404), ('/error', 500), ('/status/503', 503)):
            assert get(server.port, path) == status
        with socket.create_connection(('127.0.0.1', server.port)) as raw:
            raw.sendall(b'garbage\r\n\r\n')  # an invalid request: a WARNING from 22.0 on
            raw.recv(1024)
        server.hold('/sleep/6')  # the master aborts the worker: a CRITICAL line
        wait_for(lambda: 'WORKER TIMEOUT' in server.error_log.read_text(), 30, 'the worker timeout')
        wait_for(lambda: len(server.worker_pids()) == 2, 30, 'a replacement worker')
        os.kill(server.worker_pids()[0], signal.SIGKILL)  # an ERROR line from 22.0 on, a WARNING before

        rows = statsd_rows()
        expected = {
            name
            for name in rows
            if not STATUS_ROW.fullmatch(name) and not any(name.startswith(skipped) for skipped in NOT_ALWAYS_SENT)
        }
        if release(version) >= (22,):
            expected.add('gunicorn.log.error')
        statuses = {f'gunicorn.request.status.{code}' for code in (200, 404, 500, 503)}
        stored = listener.wait_for_names(expected | statuses)

    assert_in_metadata(stored)
    assert {name for name in stored if STATUS_ROW.fullmatch(name)} == statuses
    assert all(d.tags is None and d.rate in (None, '1.0') for d in listener.received)


@pytest.mark.parametrize('version', GUNICORN_VERSIONS)
def test_prefix_tags_and_backlog(tmp_path, version, listener):
    """--statsd-prefix and --dogstatsd-tags on every datagram; the backlog histogram where Gunicorn has it."""
    backlog = release(version) >= (24, 1)
    args = ['--statsd-host', listener.address, '--statsd-prefix', 'myapp', '--dogstatsd-tags', 'app:foo,env:test']
    if backlog:
        args.append('--enable-backlog-metric')
    with running(tmp_path, version=version, workers=1, args=args) as server:
        assert get(server.port, '/') == 200
        assert get(server.port, '/status/503') == 503
        wanted = {'gunicorn.requests', 'gunicorn.request.status.503', 'gunicorn.workers'}
        if backlog:
            # The master samples the accept queue about once a second.
            wanted.add('gunicorn.backlog.count')
        stored = listener.wait_for_names(wanted, prefix='myapp.')
        if backlog:
            # A sample may catch one of this test's requests still queued; the next ones see the queue empty.
            wait_for(
                lambda: 0 in {d.value for d in listener.drain() if d.name == 'myapp.gunicorn.backlog'},
                10,
                'a backlog sample of the empty accept queue',
            )

    assert_in_metadata(stored)
    assert {d.tags for d in listener.received} == {'app:foo,env:test'}
    assert {name for name in stored if name.startswith('gunicorn.backlog.')} == (
        {f'gunicorn.backlog.{s}' for s in (*DISTRIBUTION_SUFFIXES, 'count')} if backlog else set()
    )
    if backlog:
        # 26.1+ also sends zero values (an empty accept queue); older versions drop them.
        assert 0 in {d.value for d in listener.received if d.name == 'myapp.gunicorn.backlog'}


def test_every_statsd_row_is_something_gunicorn_sends():
    rows = statsd_rows()
    assert rows
    for name, row in rows.items():
        assert STATSD_NAMES.fullmatch(name), f'{name} claims to come from StatsD but Gunicorn never sends it'
        status = STATUS_ROW.fullmatch(name)
        if status:
            # Any status the application returns is sent; the rows list the registered ones.
            assert int(status[1]) in {s.value for s in http.HTTPStatus}, name
            assert row['metric_type'] == 'rate', name


def test_check_metrics_never_take_a_statsd_name():
    """Check and StatsD metrics arrive on the same host: only the historical gunicorn.workers is both."""
    rows = metadata()
    check_rows = {name for name, row in rows.items() if 'StatsD' not in row['description']}
    assert not {name for name in check_rows if STATSD_NAMES.fullmatch(name)}
    # Kept for compatibility with Datadog's existing check; StatsD sends it untagged, the check with a state tag.
    assert rows['gunicorn.workers']['metric_type'] == 'gauge'
