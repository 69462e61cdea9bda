"""The /proc/net tables captured from a real Gunicorn (tests/fixtures/net, see capture_net.py there)."""

from __future__ import annotations

import json
from pathlib import Path

from datadog_checks.gunicorn.sources.sockets.proc_net import parse_net_tcp, parse_net_unix

NET = Path(__file__).resolve().parents[2] / 'fixtures' / 'net'
MANIFEST = json.loads((NET / 'manifest.json').read_text())
# The fixtures were captured on x86-64: their hex addresses are little-endian words.
FIXTURE_BYTEORDER = 'little'


def fixture_tcp() -> list:
    return [
        r for name in ('tcp', 'tcp6') for r in parse_net_tcp((NET / name).read_bytes(), byteorder=FIXTURE_BYTEORDER)
    ]


def fixture_unix() -> list:
    return parse_net_unix((NET / 'unix').read_bytes())
