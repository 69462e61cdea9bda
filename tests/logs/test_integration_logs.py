"""Real Gunicorn logs through assets/logs/gunicorn.yaml, for every Gunicorn version the tests cover.

Each test starts real servers with the shared harness, makes Gunicorn write the lines a user would see (requests,
handler errors, timeouts, killed workers, reloads, upgrades, boot failures...), splits the files into records the way
the Agent's multi_line rule does, and runs every record through the pipeline evaluator. Every record must be parsed by
one of the pipeline's format rules, and the operational event the pipeline assigns must be the one an independent,
plain-text reading of the line expects.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import textwrap
from base64 import b64encode
from pathlib import Path

import pytest

from ..common import TimeoutExpired, wait_for
from ..gunicorn_env import GUNICORN_VERSIONS, Gunicorn, running
from .grok import KNOWN_USER_AGENTS, Log, get_path, load_pipeline

# The multi_line pattern of the conf.yaml logs example; the Agent anchors it at the start of the line.
ERROR_LOG_START = r'\[\d{4}-\d{2}-\d{2}'
# The wider pattern the README suggests when an error log also holds Python logging output.
MIXED_LOG_START = r'(?:\[?\d{4}-\d{2}-\d{2}|(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):)'
# The pattern the README gives for containers, where access lines (stdout) and error records (stderr) share a stream:
# an access line must start a record too, or it would be glued to the traceback before it.
# uvicorn's workers write access lines without a date (`CLIENT - "GET / HTTP/1.1" 200`): the last alternative.
CONTAINER_LOG_START = r'(?:\[\d{4}-\d{2}-\d{2}|\S* \S+ \S+ \[\d{2}/[A-Z][a-z]{2}/\d{4}:|\S* - ")'

FORMAT_PARSER = 'Parsing Gunicorn access and error logs'
CHROME = next(iter(KNOWN_USER_AGENTS))

# What a plain reading of the first line of a record says the event is: (substring, event), first hit wins.
# Written from Gunicorn's source independently of the grok rules, to catch a rule that misses or misnames a line.
EXPECTED_EVENTS = (
    ('Starting gunicorn ', 'starting'),
    ('Listening at: ', 'listening'),
    ('Using worker: ', 'worker_class'),
    ('Handling signal: ', 'signal'),
    ('Hang up: ', 'reload'),
    ('Shutting down: ', 'master_shutdown'),
    ('Reason: ', 'shutdown_reason'),
    ('Master has been promoted.', 'master_promoted'),
    ('USR2 signal ignored.', 'upgrade_ignored'),
    ('Control socket listening at ', 'control_socket_listening'),
    ('Booting worker with pid: ', 'worker_booted'),
    ('Worker exiting (pid: ', 'worker_exiting'),
    ('DIRTY WORKER TIMEOUT (pid:', 'dirty_worker_timeout'),
    ('WORKER TIMEOUT (pid:', 'worker_timeout'),
    (') was sent SIG', 'worker_killed'),
    (' was terminated due to signal ', 'worker_killed'),
    (') exited with code ', 'worker_exited'),
    ('Autorestarting worker after current request.', 'max_requests_restart'),
    ('Exception in worker process', 'worker_exception'),
    ('Parent changed, shutting down: ', 'parent_changed'),
    ('Worker reloading: ', 'code_reload'),
    ('Error handling request', 'error_handling_request'),
    ('Invalid request from ip=', 'invalid_request'),
    ('Exception in post_request hook', 'post_request_hook_error'),
    ('Exception during worker exit:', 'worker_exit_hook_error'),
    ('Socket error processing request.', 'socket_error'),
    ('Unhandled exception in main loop', 'master_exception'),
    ('Worker graceful timeout (pid:', 'worker_graceful_timeout'),
    # uvicorn's workers, through Gunicorn's error log (test_integration_uvicorn_logs.py).
    ('Exception in ASGI application', 'asgi_exception'),
    ('Application startup failed. Exiting.', 'asgi_startup_failed'),
    ('Application shutdown failed. Exiting.', 'asgi_shutdown_failed'),
    ('Invalid HTTP request received.', 'invalid_request'),
)

pytestmark = [pytest.mark.integration, pytest.mark.parametrize('version', GUNICORN_VERSIONS)]


@pytest.fixture(scope='module')
def pipeline():
    return load_pipeline()


# Reading logs the way the Agent does


def records(path: Path, start: str | None = ERROR_LOG_START) -> list[str]:
    """Lines of `path`, joined into records: a line not matching ^start continues the record before it."""
    found: list[str] = []
    for line in path.read_text().splitlines():
        if start is None or not found or re.match(start, line):
            found.append(line)
        else:
            found[-1] += '\n' + line
    return found


def expected_event(record: str) -> str | None:
    first_line = record.split('\n', 1)[0]
    return next((event for text, event in EXPECTED_EVENTS if text in first_line), None)


def run(pipeline, path: Path, rule_prefix: str, start: str | None = ERROR_LOG_START) -> list[Log]:
    """Every record of the file through the pipeline; each must be parsed by a rule named `rule_prefix...`."""
    logs = []
    for record in records(path, start):
        log = pipeline.process(record)
        rule = log.matched.get(FORMAT_PARSER)
        assert rule and rule.startswith(rule_prefix), f'no {rule_prefix} rule parsed {record[:300]!r}'
        event = get_path(log.attributes, 'gunicorn.event')
        assert event == expected_event(record), f'event {event!r} for {record[:300]!r}'
        logs.append(log)
    return logs


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split('.'))


def with_event(logs: list[Log], event: str) -> list[Log]:
    return [log for log in logs if get_path(log.attributes, 'gunicorn.event') == event]


def attr(log: Log, path: str):
    return get_path(log.attributes, path)


def logs_of_a_server_that_gives_up(pipeline, server: Gunicorn) -> list[Log]:
    """Start `server`, whose workers cannot boot, wait for its master to exit, and read its error log."""
    try:
        server.start(wait=False)
        wait_for(lambda: server.proc.poll() is not None, 30, 'the master to give up')
    finally:
        server.stop()
    return run(pipeline, server.error_log, 'gunicorn.error')


def log_has(path: Path, pattern: str) -> bool:
    return path.exists() and re.search(pattern, path.read_text()) is not None


# Traffic


def request(server: Gunicorn, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=30)
    try:
        conn.request('GET', path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def send_raw(family: int, address, payload: bytes) -> bytes:
    """One raw request on a fresh connection (for unix sockets, IPv6 and requests http.client will not send)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(payload)
        reply = b''
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


# Tests


def test_operational_events(tmp_path, version, pipeline):
    """Requests, a handler exception, a worker timeout, a SIGKILLed worker and a SIGHUP, at debug level."""
    with running(tmp_path, version=version, workers=2, args=['--timeout', '2', '--log-level', 'debug']) as server:
        assert request(server, '/') == 200
        assert request(server, '/status/404') == 404
        assert request(server, '/error') == 500
        assert request(server, '/status/503') == 503
        auth = 'Basic ' + b64encode(b'alice:secret').decode()
        referer = 'https://example.com/search?q="gunicorn"'
        assert request(server, '/?page=2', {'User-Agent': CHROME, 'Referer': referer, 'Authorization': auth}) == 200
        send_raw(socket.AF_INET, ('127.0.0.1', server.port), b'garbage\r\n\r\n')

        # A sync worker stuck in a request for longer than --timeout is aborted by the master.
        server.hold('/sleep/10')
        wait_for(lambda: log_has(server.error_log, r'WORKER TIMEOUT \(pid:\d+\)'), 30, 'the worker timeout')
        wait_for(lambda: len(server.worker_pids()) == 2, 30, 'a replacement worker')

        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed = rf'(\(pid:{victim}\) was sent SIGKILL|pid {victim} was terminated due to signal 9)'
        wait_for(lambda: log_has(server.error_log, killed), 30, f'the SIGKILL of worker {victim}')
        wait_for(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(), 30, 'a new worker')

        before = set(server.worker_pids())
        server.signal(signal.SIGHUP)
        wait_for(lambda: log_has(server.error_log, 'Hang up: Master'), 30, 'the reload')
        wait_for(lambda: len(server.worker_pids()) == 2 and not before & set(server.worker_pids()), 30, 'new workers')
    wait_for(lambda: log_has(server.error_log, 'Shutting down: Master'), 30, 'the shutdown')

    errors = run(pipeline, server.error_log, 'gunicorn.error')
    events = {attr(log, 'gunicorn.event') for log in errors}
    assert {
        'starting',
        'listening',
        'worker_class',
        'worker_booted',
        'worker_exiting',
        'worker_timeout',
        'worker_killed',
        'signal',
        'reload',
        'master_shutdown',
        'error_handling_request',
        'invalid_request',
    } <= events

    booted = {attr(log, 'gunicorn.worker.pid') for log in with_event(errors, 'worker_booted')}
    assert {attr(log, 'gunicorn.worker.pid') for log in with_event(errors, 'worker_timeout')} <= booted
    victim_logs = [log for log in with_event(errors, 'worker_killed') if attr(log, 'gunicorn.worker.pid') == victim]
    assert [attr(log, 'gunicorn.worker.signal') for log in victim_logs] == ['SIGKILL']
    assert {attr(log, 'gunicorn.signal') for log in with_event(errors, 'signal')} >= {'hup', 'term'}
    assert {attr(log, 'gunicorn.master.name') for log in with_event(errors, 'reload')} == {'Master'}
    assert {attr(log, 'level') for log in with_event(errors, 'worker_timeout')} == {'CRITICAL'}

    [handler_error] = [log for log in errors if attr(log, 'http.url') == '/error']
    assert attr(handler_error, 'error.kind') == 'RuntimeError'
    assert attr(handler_error, 'error.message') == 'boom from the test application'
    assert attr(handler_error, 'error.stack').startswith('Traceback (most recent call last):\n  File ')
    assert attr(handler_error, 'http.method') == ('GET' if release(version) >= (27,) else None)
    assert handler_error.status == 'error'
    [invalid] = [log for log in errors if attr(log, 'error.message') == "Invalid HTTP request line: 'garbage'"]
    assert attr(invalid, 'network.client.ip') == '127.0.0.1'
    # The configuration dump of debug level is one multi-line record.
    assert any(
        attr(log, 'gunicorn.message') == 'Current configuration:' and attr(log, 'gunicorn.details') for log in errors
    )

    access = run(pipeline, server.access_log, 'access.combined', start=None)
    by_url = {attr(log, 'http.url'): log for log in access}
    assert {url: log.status for url, log in by_url.items() if url != '/sleep/10'} == {
        '/': 'info',
        '/status/404': 'warn',
        '/error': 'error',
        '/status/503': 'error',
        '/?page=2': 'info',
    }
    browser = by_url['/?page=2']
    assert attr(browser, 'http.auth') == 'alice'
    assert attr(browser, 'http.referer') == referer.replace('"', '\\"')
    assert attr(browser, 'http.useragent_details.browser.family') == 'Chrome'
    assert attr(browser, 'http.url_details') == {'path': '/', 'queryString': {'page': '2'}}
    assert attr(by_url['/'], 'http.useragent') is None
    assert all(attr(log, 'network.client.ip') == '127.0.0.1' and log.timestamp for log in access)


def test_max_requests_restart(tmp_path, version, pipeline):
    with running(tmp_path, version=version, workers=1, args=['--max-requests', '3']) as server:
        [worker] = server.worker_pids()
        for _ in range(3):
            assert request(server, '/') == 200
        wait_for(lambda: log_has(server.error_log, 'Autorestarting worker'), 30, 'the max_requests restart')
    [restart] = with_event(run(pipeline, server.error_log, 'gunicorn.error'), 'max_requests_restart')
    assert attr(restart, 'pid') == worker
    assert restart.status == 'info'


def test_worker_boot_failure(tmp_path, version, pipeline):
    """An application that fails at import: the worker's traceback, its exit code, and the master's reason."""
    (tmp_path / 'bootfail.py').write_text("raise RuntimeError('the application failed to import')\n")
    server = Gunicorn(tmp_path, version=version, workers=1, app='bootfail:app', args=['--pythonpath', str(tmp_path)])
    logs = logs_of_a_server_that_gives_up(pipeline, server)
    [boot] = with_event(logs, 'worker_exception')
    assert (attr(boot, 'error.kind'), attr(boot, 'error.message')) == (
        'RuntimeError',
        'the application failed to import',
    )
    [reason] = with_event(logs, 'shutdown_reason')
    assert attr(reason, 'gunicorn.shutdown.reason') == 'Worker failed to boot.'
    # 20.x halts without naming the exit code; later versions log it (23.0 twice, with and without a period).
    exit_codes = {attr(log, 'gunicorn.worker.exit_code') for log in with_event(logs, 'worker_exited')}
    assert exit_codes == (set() if release(version) < (22,) else {3})


def test_upgrade_and_orphaned_workers(tmp_path, version, pipeline):
    """USR2 (twice), the old master stopped, the new one promoted, then killed: its workers see the parent change."""
    # A sync worker checks its parent every timeout/2 seconds; 6 s keeps a loaded CI host from timing workers out.
    with running(tmp_path, version=version, workers=1, args=['--timeout', '6']) as server:
        server.signal(signal.SIGUSR2)
        wait_for(lambda: len(re.findall('Starting gunicorn', server.error_log.read_text())) == 2, 30, 'a new master')
        new_master = int(re.findall(r'Listening at: \S+ \((\d+)\)', server.error_log.read_text())[-1])
        wait_for(lambda: len(server.worker_pids(new_master)) == 1, 30, "the new master's worker")
        server.signal(signal.SIGUSR2)
        wait_for(lambda: log_has(server.error_log, 'USR2 signal ignored'), 30, 'the second USR2 to be refused')
        server.signal(signal.SIGTERM)
        wait_for(lambda: log_has(server.error_log, 'Master has been promoted'), 30, 'the promotion')
        # The worker to orphan must be alive when its master dies (one replaced meanwhile would be a new pid).
        orphan = wait_for(
            lambda: len(pids := server.worker_pids(new_master)) == 1 and pids[0], 30, "the promoted master's worker"
        )
        os.kill(new_master, signal.SIGKILL)
        try:
            wait_for(lambda: log_has(server.error_log, 'Parent changed, shutting down'), 30, 'the orphaned worker')
        except TimeoutExpired as exc:
            alive = os.path.exists('/proc/%d' % orphan)
            tail = server.error_log.read_text().splitlines()[-15:]
            raise AssertionError(
                '%s; worker %d alive: %s; log tail:\n%s' % (exc, orphan, alive, '\n'.join(tail))
            ) from exc
    logs = run(pipeline, server.error_log, 'gunicorn.error')
    assert [attr(log, 'gunicorn.upgrade.reason') for log in with_event(logs, 'upgrade_ignored')] == ['Child exists.']
    assert [attr(log, 'pid') for log in with_event(logs, 'master_promoted')] == [new_master]
    assert {attr(log, 'gunicorn.master.name') for log in with_event(logs, 'master_shutdown')} == {'Master'}
    assert with_event(logs, 'parent_changed')


def test_hooks_and_code_reload(tmp_path, version, pipeline):
    """Failing post_request and worker_exit hooks, and a --reload restart caused by a watched file."""
    config = tmp_path / 'hooks.conf.py'
    config.write_text(
        textwrap.dedent("""\
        def post_request(worker, req, environ, resp):
            raise RuntimeError('post_request hook failed')


        def worker_exit(server, worker):
            raise RuntimeError('worker_exit hook failed')
        """)
    )
    watched = tmp_path / 'watched.txt'
    watched.write_text('0')
    args = ['-c', str(config), '--reload', '--reload-extra-file', str(watched)]
    with running(tmp_path, version=version, workers=1, args=args) as server:
        assert request(server, '/') == 200
        wait_for(lambda: log_has(server.error_log, 'Exception in post_request hook'), 30, 'the post_request hook')
        [worker] = server.worker_pids()

        def reloaded():
            # The reloader polls modification times about once a second: keep changing the file until it notices.
            watched.write_text(str(int(watched.read_text()) + 1))
            return log_has(server.error_log, 'Worker reloading')

        wait_for(reloaded, 30, 'the code reload', interval=0.5)
        wait_for(lambda: log_has(server.error_log, 'Exception during worker exit'), 30, 'the worker_exit hook')
        wait_for(lambda: server.worker_pids() and worker not in server.worker_pids(), 30, 'a new worker')
    logs = run(pipeline, server.error_log, 'gunicorn.error')
    hook = with_event(logs, 'post_request_hook_error')[0]
    assert (attr(hook, 'error.kind'), attr(hook, 'error.message')) == ('RuntimeError', 'post_request hook failed')
    exit_hook = with_event(logs, 'worker_exit_hook_error')[0]
    assert (attr(exit_hook, 'error.kind'), attr(exit_hook, 'error.message')) == (
        'RuntimeError',
        'worker_exit hook failed',
    )
    reload = with_event(logs, 'code_reload')[0]
    assert attr(reload, 'gunicorn.reload.path') == str(watched)


def test_access_log_variants(tmp_path, version, pipeline):
    """Unix-socket and IPv6 clients, %(L)s appended, the common format, absolute URLs and unusual methods."""
    default = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    sock = tmp_path / 'g.sock'
    # Gunicorn 22.0+ refuses non-standard method names unless told otherwise.
    permit = ['--permit-unconventional-http-method'] if release(version) >= (22,) else []
    unix = Gunicorn(
        tmp_path / 'unix',
        version=version,
        workers=1,
        bind=f'unix:{sock}',
        args=['--access-logformat', default + ' %(L)s', *permit],
    )
    with unix:
        for payload in (
            b'GET /u?a=1&b=two HTTP/1.0\r\n\r\n',
            b'HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
            b'GET http://example.com:8080/abs?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
            b'FOO-BAR /custom HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
        ):
            send_raw(socket.AF_UNIX, str(sock), payload)
        wait_for(lambda: len(unix.access_log.read_text().splitlines()) == 4, 30, 'four access lines')
    logs = {attr(log, 'http.url'): log for log in run(pipeline, unix.access_log, 'access.combined', start=None)}
    assert all(attr(log, 'network.client.ip') is None and attr(log, 'duration') >= 0 for log in logs.values())
    assert attr(logs['/u?a=1&b=two'], 'http.version') == '1.0'
    assert attr(logs['http://example.com:8080/abs?q=1'], 'http.url_details') == {
        'scheme': 'http',
        'host': 'example.com',
        'port': 8080,
        'path': '/abs',
        'queryString': {'q': '1'},
    }
    assert attr(logs['/custom'], 'http.method') == 'FOO-BAR'

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(('::1', 0))
        port = probe.getsockname()[1]
    common = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
    ipv6 = Gunicorn(
        tmp_path / 'ipv6', version=version, workers=1, bind=f'[::1]:{port}', args=['--access-logformat', common]
    )
    with ipv6:
        reply = send_raw(socket.AF_INET6, ('::1', port), b'GET /v6 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
        assert reply.startswith(b'HTTP/1.1 200')
        wait_for(lambda: ipv6.access_log.read_text(), 30, 'the IPv6 access line')
    [v6] = run(pipeline, ipv6.access_log, 'access.common', start=None)
    assert (attr(v6, 'network.client.ip'), attr(v6, 'http.status_code')) == ('::1', 200)


def test_container_stream(tmp_path, version, pipeline):
    """Access and error logs both on the process output, as in Docker and Kubernetes (--access-logfile -)."""
    args = ['--access-logfile', '-', '--error-logfile', '-']
    with running(tmp_path, version=version, workers=1, args=args) as server:
        assert request(server, '/error') == 500
        assert request(server, '/') == 200
        wait_for(lambda: log_has(server.output, r'"GET / HTTP/1.1" 200'), 30, 'the access line')
    # With the error-log pattern alone, the access line written after a traceback joins the traceback's record.
    assert any('"GET /error HTTP/1.1" 500' in record for record in records(server.output) if '\nTraceback' in record)
    logs = [pipeline.process(record) for record in records(server.output, CONTAINER_LOG_START)]
    rules = [log.matched.get(FORMAT_PARSER) for log in logs]
    assert set(rules) == {'access.combined', 'gunicorn.error'}, rules
    [failure] = with_event(logs, 'error_handling_request')
    assert attr(failure, 'error.message') == 'boom from the test application'
    assert [attr(log, 'http.status_code') for log in logs if attr(log, 'http.status_code')] == [500, 200]


LOGGING_FORMATS = {
    'python.basic': '%(levelname)s:%(name)s:%(message)s',
    'python.asctime': '%(asctime)s %(levelname)s %(name)s %(message)s',
    'python.asctime_dashes': '%(asctime)s - %(name)s - %(levelname)s - %(message)s',
    'python.flask': '[%(asctime)s] %(levelname)s in %(module)s: %(message)s',
}


@pytest.mark.parametrize('rule', LOGGING_FORMATS)
def test_python_logging_formats(tmp_path, version, pipeline, rule):
    """Gunicorn's own messages written through --log-config in the usual Python logging formats."""
    output = tmp_path / 'python.log'
    config = tmp_path / 'logging.ini'
    config.write_text(
        textwrap.dedent("""\
        [loggers]
        keys=root,error
        [handlers]
        keys=file
        [formatters]
        keys=plain
        [logger_root]
        level=INFO
        handlers=
        [logger_error]
        level=INFO
        handlers=file
        propagate=0
        qualname=gunicorn.error
        [handler_file]
        class=FileHandler
        formatter=plain
        args=(%r, 'a')
        [formatter_plain]
        format=%s
        """)
        % (str(output), LOGGING_FORMATS[rule])
    )
    with running(tmp_path, version=version, workers=1, args=['--log-config', str(config)]) as server:
        assert request(server, '/error') == 500
        wait_for(lambda: log_has(output, 'Error handling request'), 30, 'the handler error')
    logs = run(pipeline, output, rule, start=MIXED_LOG_START)
    assert {'starting', 'listening', 'worker_booted', 'error_handling_request'} <= {
        attr(log, 'gunicorn.event') for log in logs
    }
    [failure] = with_event(logs, 'error_handling_request')
    assert (attr(failure, 'error.kind'), failure.status) == ('RuntimeError', 'error')
    if rule == 'python.flask':
        assert attr(failure, 'python.module') == 'glogging'
    else:
        assert attr(failure, 'logger.name') == 'gunicorn.error'
    assert all((log.timestamp is None) == (rule == 'python.basic') for log in logs)
