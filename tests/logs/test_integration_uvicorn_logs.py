"""Real logs of uvicorn's worker classes under Gunicorn 27.0.1 through assets/logs/gunicorn.yaml.

uvicorn's workers hand uvicorn's `uvicorn.access` and `uvicorn.error` loggers Gunicorn's handlers: error records keep
Gunicorn's format, access lines are uvicorn's own (`CLIENT - "METHOD PATH HTTP/VERSION" STATUS`). Each test starts a
FastAPI application under each class (the uvicorn-worker package's and uvicorn's own deprecated one), sends what users
send (IPv4, IPv6 and unix-socket clients, a proxy header, query strings, percent-encoded and long paths, other
methods, a handler exception, an invalid request), stops it, and reads the files the way the Agent does.
"""

from __future__ import annotations

import socket

import pytest

from ..common import wait_for
from ..gunicorn_env import Gunicorn, running
from .grok import load_pipeline
from .test_integration_logs import (
    CONTAINER_LOG_START,
    FORMAT_PARSER,
    attr,
    log_has,
    logs_of_a_server_that_gives_up,
    records,
    run,
    send_raw,
    with_event,
)

UVICORN_CLASSES = ('uvicorn_worker.UvicornWorker', 'uvicorn.workers.UvicornWorker')
LONG_PATH = '/status/404/' + 'segment-' * 500

pytestmark = [pytest.mark.integration, pytest.mark.parametrize('worker_class', UVICORN_CLASSES)]


@pytest.fixture(scope='module')
def pipeline():
    return load_pipeline()


def ipv6_port() -> int:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(('::1', 0))
        return probe.getsockname()[1]


def http(request_line: str, *headers: str) -> bytes:
    lines = [request_line, 'Host: test', 'Connection: close', 'Content-Length: 0', *headers]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode()


def test_access_and_error_lines(tmp_path, worker_class, pipeline):
    port6, sock = ipv6_port(), tmp_path / 'u.sock'
    server = Gunicorn(
        tmp_path,
        workers=1,
        app='fastapi_app:failing_shutdown_app',
        workers_packages=True,
        # Gunicorn's --forwarded-allow-ips is what uvicorn's workers trust X-Forwarded-For from.
        args=['-k', worker_class, '-b', f'[::1]:{port6}', '-b', f'unix:{sock}', '--forwarded-allow-ips', '127.0.0.1'],
    )
    ipv4 = (socket.AF_INET, None)
    sent = [
        (ipv4, http('GET /status/404?a=1&b=two HTTP/1.1')),
        ((socket.AF_INET6, ('::1', port6)), http('GET /status/200 HTTP/1.1')),
        ((socket.AF_UNIX, str(sock)), http('GET /status/200?via=unix HTTP/1.1')),
        (ipv4, http('GET / HTTP/1.1', 'X-Forwarded-For: 203.0.113.7')),
        (ipv4, http('GET / HTTP/1.1', 'X-Forwarded-For: 2001:db8::7')),
        (ipv4, http('GET /%E6%97%A5%E6%9C%AC/x%20y?q=%22z%22 HTTP/1.1')),
        (ipv4, http(f'GET {LONG_PATH} HTTP/1.1')),
        (ipv4, http('POST /status/201 HTTP/1.1')),
        (ipv4, http('DELETE /status/503 HTTP/1.0')),
        (ipv4, http('PATCH /status/409 HTTP/1.1')),
        (ipv4, http('GET /error HTTP/1.1')),
        (ipv4, b'garbage\r\n\r\n'),
    ]
    with server:
        for (family, address), payload in sent:
            send_raw(family, address or ('127.0.0.1', server.port), payload)
        # Every request but the invalid one gets an access line.
        wait_for(lambda: len(server.access_log.read_text().splitlines()) == len(sent) - 1, 30, 'the access lines')
        wait_for(lambda: log_has(server.error_log, 'Invalid HTTP request received'), 30, 'the invalid request')
    wait_for(lambda: log_has(server.error_log, 'Shutting down: Master'), 30, 'the shutdown')

    access = run(pipeline, server.access_log, 'access.uvicorn', start=None)
    seen = [
        (
            attr(log, 'network.client.ip'),
            attr(log, 'http.method'),
            attr(log, 'http.url'),
            attr(log, 'http.version'),
            attr(log, 'http.status_code'),
            log.status,
        )
        for log in access
    ]
    assert seen == [
        ('127.0.0.1', 'GET', '/status/404?a=1&b=two', '1.1', 404, 'warn'),
        ('::1', 'GET', '/status/200', '1.1', 200, 'info'),
        (None, 'GET', '/status/200?via=unix', '1.1', 200, 'info'),
        ('203.0.113.7', 'GET', '/', '1.1', 200, 'info'),
        ('2001:db8::7', 'GET', '/', '1.1', 200, 'info'),
        ('127.0.0.1', 'GET', '/%E6%97%A5%E6%9C%AC/x%20y?q=%22z%22', '1.1', 404, 'warn'),
        ('127.0.0.1', 'GET', LONG_PATH, '1.1', 404, 'warn'),
        ('127.0.0.1', 'POST', '/status/201', '1.1', 201, 'info'),
        ('127.0.0.1', 'DELETE', '/status/503', '1.0', 503, 'error'),
        ('127.0.0.1', 'PATCH', '/status/409', '1.1', 409, 'warn'),
        ('127.0.0.1', 'GET', '/error', '1.1', 500, 'error'),
    ]
    ports = [attr(log, 'network.client.port') for log in access]
    # A real client port for direct clients, none for the unix socket, 0 for a forwarded address.
    assert all(port > 0 for port in ports[:2] + ports[5:]) and ports[2:5] == [None, 0, 0]
    assert attr(access[0], 'http.url_details') == {'path': '/status/404', 'queryString': {'a': '1', 'b': 'two'}}
    assert not any(log.timestamp for log in access), 'uvicorn writes no date: the Agent gives the time of reading'

    errors = run(pipeline, server.error_log, 'gunicorn.error')
    [failure] = with_event(errors, 'asgi_exception')
    assert (attr(failure, 'error.kind'), attr(failure, 'error.message')) == (
        'RuntimeError',
        'boom from the test application',
    )
    assert failure.status == 'error'
    [invalid] = with_event(errors, 'invalid_request')
    assert invalid.status == 'warn'
    [shutdown] = with_event(errors, 'asgi_shutdown_failed')
    assert shutdown.status == 'error'
    # The shutdown failure's traceback is the record before it.
    stacks = [log for log in errors if attr(log, 'error.message') == 'the application could not flush its queue']
    assert [errors.index(log) + 1 for log in stacks] == [errors.index(shutdown)]


def test_application_that_fails_to_start(tmp_path, worker_class, pipeline):
    """FastAPI's lifespan raises: the traceback, uvicorn's event, and Gunicorn's own verdict on the worker."""
    server = Gunicorn(
        tmp_path, workers=1, app='fastapi_app:failing_app', workers_packages=True, args=['-k', worker_class]
    )
    logs = logs_of_a_server_that_gives_up(pipeline, server)
    [failed] = with_event(logs, 'asgi_startup_failed')
    assert failed.status == 'error'
    before = logs[logs.index(failed) - 1]
    assert before.matched[FORMAT_PARSER] == 'gunicorn.error_traceback'
    assert (attr(before, 'error.kind'), attr(before, 'error.message')) == (
        'RuntimeError',
        'the application could not reach its database',
    )
    assert {attr(log, 'gunicorn.worker.exit_code') for log in with_event(logs, 'worker_exited')} == {3}
    [reason] = with_event(logs, 'shutdown_reason')
    assert attr(reason, 'gunicorn.shutdown.reason') == 'Worker failed to boot.'


def test_container_stream(tmp_path, worker_class, pipeline):
    """Access and error logs on one stream (--access-logfile -): uvicorn's access lines must start records too."""
    args = ['-k', worker_class, '--access-logfile', '-', '--error-logfile', '-']
    with running(tmp_path, workers=1, app='fastapi_app:app', workers_packages=True, args=args) as server:
        assert send_raw(socket.AF_INET, ('127.0.0.1', server.port), http('GET /error HTTP/1.1')).startswith(
            b'HTTP/1.1 500'
        )
        send_raw(socket.AF_INET, ('127.0.0.1', server.port), http('GET / HTTP/1.1'))
        wait_for(lambda: log_has(server.output, r'"GET / HTTP/1.1" 200'), 30, 'the access line')
    logs = [pipeline.process(record) for record in records(server.output, CONTAINER_LOG_START)]
    assert {log.matched.get(FORMAT_PARSER) for log in logs} == {'access.uvicorn', 'gunicorn.error'}
    [failure] = with_event(logs, 'asgi_exception')
    assert attr(failure, 'error.message') == 'boom from the test application'
    assert [attr(log, 'http.status_code') for log in logs if attr(log, 'http.status_code')] == [500, 200]
