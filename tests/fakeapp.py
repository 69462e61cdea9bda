"""A fake Gunicorn app with listeners and connections in its proc tree, for the listener, queue and saturation tests."""

from __future__ import annotations

from datadog_checks.gunicorn.collectors.discovery import AppTree

LISTEN, ESTABLISHED = 0x0A, 0x01
SS_UNCONNECTED, SS_CONNECTING, SS_CONNECTED = 1, 2, 3
APP = '127.0.0.1:8000'
CTL = '/run/user/0/gunicorn.ctl'


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def app(fake, workers=(101, 102, 103), start=1000, threads=1):
    """A master (100) and sync workers listening on APP, with the control socket held by the master alone."""
    fake.add(100, 1, 'gunicorn: master [a]', children=workers, threads=2)
    for pid in workers:
        fake.add(pid, 100, 'gunicorn: worker [a]', start=start, threads=threads)
        fake.set_fds(pid, '/dev/null', 'socket:[10]', 'pipe:[7]')
    fake.set_fds(100, '/dev/null', 'socket:[10]', 'socket:[20]', 'socket:[21]')
    fake.set_net(
        100,
        tcp=[
            ('127.0.0.1', 8000, '0.0.0.0', 0, LISTEN, 2, 10),
            ('127.0.0.1', 5432, '0.0.0.0', 0, LISTEN, 0, 99),  # another program's
            ('127.0.0.1', 8000, '127.0.0.1', 40001, ESTABLISHED, 0, 0),  # queued
            ('127.0.0.1', 8000, '127.0.0.1', 40002, ESTABLISHED, 0, 0),  # queued
            ('127.0.0.1', 8000, '127.0.0.1', 40003, ESTABLISHED, 0, 31),  # accepted by 101
        ],
        unix=[(True, SS_UNCONNECTED, 20, CTL), (False, SS_CONNECTED, 21, None)],
    )


def tree(procfs, master=100, workers=(101, 102, 103)) -> AppTree:
    return AppTree(procfs.read_stat(master), [procfs.read_stat(pid) for pid in workers])


def addresses(listeners):
    return [str(a) for a in listeners.addresses]
