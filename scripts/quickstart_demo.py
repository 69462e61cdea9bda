"""The quick start, inside the check's virtualenv: a real Gunicorn on loopback, some traffic, two check runs.

Started by `python3 scripts/dev.py quickstart`; everything it starts is stopped before it exits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gunicorn_env import NEWEST, running, wait_for  # noqa: E402

APP = 'quickstart'


def main() -> int:
    with tempfile.TemporaryDirectory(prefix='gunicorn-quickstart-') as tmp:
        print('==> starting Gunicorn %s on loopback with 4 workers (app name %r)' % (NEWEST, APP), flush=True)
        with running(Path(tmp), version=NEWEST, name=APP, workers=4) as server:
            print('    master pid %d, workers %s, serving %s' % (server.master_pid, server.worker_pids(), server.bind))
            for path in ('/', '/status/404', '/', '/status/503'):
                status, _ = server.get(path)
                print('    GET %-12s -> %d' % (path, status))
            print('==> holding one CPU-bound request so that one worker is working', flush=True)
            busy = server.hold('/burn/6')
            wait_for(lambda: _access_lines(server) >= 4, 10, 'the access log')
            command = [
                sys.executable,
                '-m',
                'datadog_checks.gunicorn',
                '--proc-name',
                APP,
                '--gunicorn',
                str(server.venv / 'bin' / 'gunicorn'),
                '--times',
                '2',
                '--pause',
                '1',
            ]
            print('==> %s' % ' '.join(command[1:]), flush=True)
            result = subprocess.run(command, cwd=ROOT, timeout=120)
            busy.join(10)
        print('==> Gunicorn stopped')
    return result.returncode


def _access_lines(server) -> int:
    return len(server.access_log.read_text().splitlines()) if server.access_log.exists() else 0


if __name__ == '__main__':
    sys.exit(main())
