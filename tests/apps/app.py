"""A WSGI application for the tests: each route produces one behaviour a monitor must see.

Routes: `/` answers at once; `/sleep/S` blocks on I/O for S seconds (a worker waiting on a database);
`/burn/S` spins on the CPU for S seconds; `/error` raises inside the handler; `/status/CODE` answers CODE.
`make_app(...)` is the same application from a factory, for `app:make_app(password="...")` on a command line.
It imports only the standard library so that it runs in every Gunicorn virtualenv the tests create.
"""

import time


def _burn(seconds):
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


def app(environ, start_response):
    path = environ.get('PATH_INFO', '/')
    parts = [p for p in path.split('/') if p]
    status = '200 OK'
    if parts[:1] == ['sleep']:
        time.sleep(float(parts[1]))
    elif parts[:1] == ['burn']:
        _burn(float(parts[1]))
    elif parts[:1] == ['error']:
        raise RuntimeError('boom from the test application')
    elif parts[:1] == ['status']:
        code = int(parts[1])
        status = '%d %s' % (code, 'Test')
    body = ('%s %s\n' % (status, path)).encode()
    start_response(status, [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]


application = app


def make_app(**settings):
    """A factory Gunicorn 20.1+ calls for `app:make_app(password="x")`: arguments that are Python literals written on
    the command line, where a secret stays in every process's argv and, by default, in the proc_name."""
    return app
