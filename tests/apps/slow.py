"""A WSGI application that is slow to import, like a large Django project: for the `--preload` window.

`SLOW_IMPORT_SECONDS` (default 0, at most 30 so that a mistaken value cannot hang a test run) is slept at import
time; with `--preload` the master does this import itself, before setting its title and forking any worker. When
`SLOW_IMPORT_RELEASE` names a file, the import ends as soon as that file exists, so a test can end the window when
it has seen what it wanted instead of waiting it out.
"""

import os
import time

_deadline = time.monotonic() + min(float(os.environ.get('SLOW_IMPORT_SECONDS', '0')), 30.0)
_release = os.environ.get('SLOW_IMPORT_RELEASE')
while time.monotonic() < _deadline and not (_release and os.path.exists(_release)):
    time.sleep(0.05)


def app(environ, start_response):
    body = b'imported slowly\n'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
