"""The test application with a large import: with --preload the master builds it once and workers share its pages."""

import os

from app import app  # noqa: F401

# Written byte by byte, so the pages are resident (a zero-filled buffer could stay unbacked).
BALLAST = b'x' * (int(os.environ.get('BIG_APP_MB', '64')) * 1024 * 1024)
