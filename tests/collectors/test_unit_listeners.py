"""Which listeners are the app's, on fake proc trees: each source, the control socket left out, caching."""

from __future__ import annotations

import logging

from datadog_checks.gunicorn.collectors.fds import FdReader
from datadog_checks.gunicorn.collectors.listeners import (
    REIDENTIFY_SECONDS,
    SOURCE_BIND,
    SOURCE_CONTROL_SOCKET,
    SOURCE_SOCKETS,
    ListenerFinder,
)
from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources.sockets.tables import SocketTables

from ..fakeapp import APP, CTL, LISTEN, SS_UNCONNECTED, Clock, addresses, app, tree


def finder(procfs, configured=(), clock=None):
    log = logging.getLogger('test')
    tables = SocketTables(procfs, log)
    return ListenerFinder(
        tables, log, FdReader(procfs, log), tuple(parse_bind(b) for b in configured), clock or Clock()
    )


def test_shared_listeners_are_held_by_the_master_and_its_workers_never_the_control_socket(fake, procfs):
    app(fake)
    found = finder(procfs).find(tree(procfs))
    assert (addresses(found), found.source) == ([APP], SOURCE_SOCKETS)


def test_reuse_port_listeners_are_the_address_every_listening_worker_listens_on(fake, procfs):
    app(fake)
    fake.set_fds(100, '/dev/null', 'socket:[20]')  # the master keeps no listener with --reuse-port
    fake.set_fds(101, 'socket:[11]', 'socket:[15]')  # its own listener, and one of the worker's own
    fake.set_fds(102, 'socket:[12]')
    fake.set_fds(103, 'pipe:[1]')  # just forked: no socket yet
    fake.set_net(
        100,
        tcp=[
            ('127.0.0.1', 8000, '0.0.0.0', 0, LISTEN, 1, 11),
            ('127.0.0.1', 8000, '0.0.0.0', 0, LISTEN, 0, 12),
            ('127.0.0.1', 9100, '0.0.0.0', 0, LISTEN, 0, 15),
        ],
        unix=[(True, SS_UNCONNECTED, 20, CTL)],
    )
    assert addresses(finder(procfs).find(tree(procfs))) == [APP]


def test_unix_and_ipv6_listeners(fake, procfs):
    app(fake)
    fake.set_fds(100, 'socket:[10]', 'socket:[13]', 'socket:[20]')
    for pid in (101, 102, 103):
        fake.set_fds(pid, 'socket:[10]', 'socket:[13]')
    fake.set_net(
        100,
        tcp6=[('::', 8000, '::', 0, LISTEN, 0, 10)],
        unix=[(True, SS_UNCONNECTED, 13, '/run/app.sock'), (True, SS_UNCONNECTED, 20, CTL)],
    )
    assert addresses(finder(procfs).find(tree(procfs))) == ['[::]:8000', 'unix:/run/app.sock']


def test_the_bind_option_wins_and_needs_no_fd(fake, procfs):
    app(fake)
    fake.set_fds(100)  # nothing readable needed
    found = finder(procfs, configured=['unix:/run/app.sock', APP]).find(tree(procfs))
    assert (addresses(found), found.source) == (['unix:/run/app.sock', APP], SOURCE_BIND)


def test_announced_listeners_come_before_the_sockets(fake, procfs):
    app(fake)
    found = finder(procfs).find(tree(procfs), announced=['http://127.0.0.1:8001', 'not an address', 'unix:/a'])
    assert (addresses(found), found.source) == (['127.0.0.1:8001', 'unix:/a'], SOURCE_CONTROL_SOCKET)
    # Nothing usable announced: the sockets decide.
    assert finder(procfs).find(tree(procfs), announced=['fd://3']).source == SOURCE_SOCKETS


def test_unreadable_fds_mean_no_listeners_said_once(fake, procfs, caplog):
    app(fake)
    (fake.root / '100' / 'fd').rename(fake.root / '100' / 'fd.away')
    (fake.root / '100' / 'fd').write_text('')  # listdir fails as on a denied directory
    find = finder(procfs)
    with caplog.at_level(logging.DEBUG):
        assert find.find(tree(procfs)) is None
        assert find.find(tree(procfs)) is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and 'CAP_SYS_PTRACE' in said[0] and '`bind`' in said[0]
    assert find.fds.denied


def test_no_listener_held_by_the_workers_is_said_once(fake, procfs, caplog):
    app(fake)
    for pid in (101, 102, 103):
        fake.set_fds(pid, 'pipe:[1]')
    find = finder(procfs)
    with caplog.at_level(logging.DEBUG):
        assert find.find(tree(procfs)) is None
        assert find.find(tree(procfs)) is None
    assert [r.getMessage() for r in caplog.records if 'No listener metrics' in r.getMessage()] != []
    assert len([r for r in caplog.records if 'No listener metrics' in r.getMessage()]) == 1


def test_a_master_gone_while_identifying_is_no_listener(fake, procfs):
    app(fake)
    t = tree(procfs)
    fake.remove(100)
    assert finder(procfs).find(t) is None


def test_sockets_are_read_again_only_when_needed(fake, procfs):
    app(fake)
    clock = Clock()
    find = finder(procfs, clock=clock)

    def sockets_readable(pids, readable):
        for pid in pids:
            if readable:
                fake.set_fds(pid, 'socket:[10]')
            else:
                fake.set_fds(pid, 'pipe:[1]')  # would find nothing: what follows comes from memory

    first = find.find(tree(procfs))
    sockets_readable((100, 101, 102, 103), False)
    assert find.find(tree(procfs)) == first
    assert find.find(tree(procfs, workers=(101, 102))) == first  # one worker recycled
    # Every worker replaced (a HUP): read again.
    fake.add(201, 100, 'gunicorn: worker [a]', start=2000)
    sockets_readable((201,), False)
    assert find.find(tree(procfs, workers=(201,))) is None
    sockets_readable((100, 201), True)
    assert addresses(find.find(tree(procfs, workers=(201,)))) == [APP]
    # A listener gone (`forget`): read again.
    sockets_readable((100, 201), False)
    assert find.find(tree(procfs, workers=(201,))) is not None
    find.forget(procfs.read_stat(100).key)
    assert find.find(tree(procfs, workers=(201,))) is None
    # And every REIDENTIFY_SECONDS.
    sockets_readable((100, 201), True)
    assert find.find(tree(procfs, workers=(201,))) is not None
    sockets_readable((100, 201), False)
    clock.now += REIDENTIFY_SECONDS - 1
    assert find.find(tree(procfs, workers=(201,))) is not None
    clock.now += 1
    assert find.find(tree(procfs, workers=(201,))) is None
