from __future__ import annotations

import logging

import pytest

from datadog_checks.gunicorn import control_socket as ctl
from datadog_checks.gunicorn.health import ControlSocketMonitor, host_root
from datadog_checks.gunicorn.procfs import ProcessKey, ProcFS


def stats(spawned, killed, reloads):
    return ctl.parse_stats({'pid': 1, 'workers_spawned': spawned, 'workers_killed': killed, 'reloads': reloads})


def test_churn_is_a_delta_per_master_and_never_negative():
    monitor = ControlSocketMonitor(ProcFS('/proc'), logging.getLogger('test'))
    first, second = ProcessKey(1, 10), ProcessKey(2, 20)
    assert monitor.churn(first, stats(4, 0, 0)) is None  # no baseline yet
    assert monitor.churn(first, stats(6, 1, 1)) == (2, 1, 1)
    assert monitor.churn(second, stats(100, 50, 9)) is None  # another master starts from its own baseline
    assert monitor.churn(first, stats(5, 1, 1)) == (0, 0, 0)  # a counter going back is not a negative count
    assert monitor.churn(first, ctl.parse_stats({'pid': 1})) is None  # missing fields: nothing to say
    monitor.forget_except({second})
    assert monitor.churn(first, stats(7, 1, 1)) is None


@pytest.mark.parametrize(
    'procfs_root, expected',
    [('/proc', ''), ('/proc/', ''), ('/host/proc', '/host'), ('/host/proc/', '/host'), ('/custom/procfs', '')],
)
def test_host_root(procfs_root, expected):
    assert host_root(procfs_root) == expected


class ListenersClient:
    """Answers `show listeners` and counts how often it was asked."""

    def __init__(self):
        self.asked = 0
        self.fail = False

    def show_listeners(self):
        self.asked += 1
        if self.fail:
            raise ctl.SocketTimeout('slow', '/run/app.ctl')
        return (ctl.Listener('http://127.0.0.1:8000', 5, 'tcp'),)


def test_listeners_are_asked_again_only_after_a_reload(tmp_path):
    monitor = ControlSocketMonitor(ProcFS(str(tmp_path)), logging.getLogger('test'))
    client = ListenersClient()
    master = ProcFS('/proc').read_stat(1)
    for reloads in (0, 0, 0):
        assert monitor._listeners_of(client, master, stats(1, 0, reloads))[0].address == 'http://127.0.0.1:8000'
    assert client.asked == 1
    monitor._listeners_of(client, master, stats(1, 0, 1))  # a HUP may have changed the binds
    assert client.asked == 2
    client.fail = True
    assert monitor._listeners_of(client, master, stats(1, 0, 2)) == ()
    client.fail = False
    monitor._listeners_of(client, master, stats(1, 0, 2))  # a failed answer is not remembered
    assert client.asked == 4
    monitor.forget_except(set())
    monitor._listeners_of(client, master, stats(1, 0, 2))
    assert client.asked == 5


def test_heartbeat_ages_that_cannot_be_true_are_dropped():
    from datadog_checks.gunicorn.health import _heartbeat_ages

    entries = ctl.parse_workers(
        {
            'workers': [
                {'pid': 1, 'last_heartbeat': 1.5},
                {'pid': 2, 'last_heartbeat': -299260051.5},
                {'pid': 3, 'last_heartbeat': 5000.0},
                {'pid': 4},
            ]
        }
    )
    assert _heartbeat_ages(entries, uptime=100.0) == (1.5,)
    assert _heartbeat_ages(entries, uptime=None) == (1.5, 5000.0)
