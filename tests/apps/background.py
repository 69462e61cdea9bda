"""The test application with a background thread started at import, as SDKs do (error reporters, metric exporters):
a sync worker then runs two OS threads, which alone makes it look threaded from the outside."""

import threading
import time

from app import app  # noqa: F401


def _idle():
    while True:
        time.sleep(3600)


threading.Thread(target=_idle, name='sdk-transport', daemon=True).start()
