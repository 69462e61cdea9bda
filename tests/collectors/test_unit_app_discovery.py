"""Node-wide discovery on fake proc trees: names, selection, the bound, and which processes a run looks at."""

from __future__ import annotations

import logging
import os

import pytest

from datadog_checks.gunicorn.collectors.app_discovery import AppDiscovery, AppSelection, ProcessTable, list_apps
from datadog_checks.gunicorn.collectors.discovery import Sightings
from datadog_checks.gunicorn.sources.app_names import (
    FROM_APPLICATION,
    FROM_CONFIG_FILE,
    FROM_ENVIRONMENT,
    FROM_NAME_OPTION,
    FROM_TITLE,
)
from datadog_checks.gunicorn.sources.procfs import ProcFS

LOG = logging.getLogger(__name__)
VENV = '/srv/venv/bin'


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def titled(fake, master, name, workers=2, ppid=1):
    kids = tuple(range(master + 1, master + 1 + workers))
    fake.add(master, ppid, 'gunicorn: master [%s]' % name, children=kids)
    for pid in kids:
        fake.add(pid, master, 'gunicorn: worker [%s]' % name)


def untitled(fake, master, *args, workers=2):
    argv = [VENV + '/python', VENV + '/gunicorn', *args]
    kids = tuple(range(master + 1, master + 1 + workers))
    fake.add(master, 1, argv, comm='gunicorn', children=kids)
    for pid in kids:
        fake.add(pid, master, argv, comm='gunicorn')


def set_forks(fake, count):
    (fake.root / 'stat').write_text('btime 0\nprocesses %d\n' % count)


def names(table):
    return sorted((m.name, n.source) for m, n in table.masters(Sightings()))


def test_selection_matches_from_the_start_ignoring_case_and_exclusion_wins():
    selection = AppSelection.of(['shop', 'API-.*'], ['.*-canary$'], None)
    assert [
        app for app in ('shop', 'Shopfront', 'myshop', 'api-users', 'api-users-canary') if selection.wanted(app)
    ] == [
        'shop',
        'Shopfront',
        'api-users',
    ]
    assert AppSelection.of(None, None, None).wanted('anything')


def test_bound_keeps_the_apps_already_reported_before_new_ones():
    selection = AppSelection.of(None, None, 2)
    assert selection.bound(['c', 'a', 'b']) == (['a', 'b'], ['c'])
    # `c` was reported: an app that sorts before it and starts later does not push it out.
    assert selection.bound(['c', 'a', 'b'], reported=['c', 'b']) == (['b', 'c'], ['a'])


def test_every_master_is_named_by_its_title_or_as_gunicorn_would_title_it(fake, procfs, tmp_path):
    titled(fake, 100, 'shop')
    untitled(fake, 200, '-n', 'billing', 'billing.wsgi:app')
    untitled(fake, 300, 'users.wsgi:app')
    fake.set_environ(300, PATH='/bin', GUNICORN_CMD_ARGS='--workers 2 --name "user accounts"')
    untitled(fake, 400, '-c', 'conf/gunicorn.py', 'search.wsgi:app')
    config = tmp_path / 'srv' / 'conf'
    config.mkdir(parents=True)
    (config / 'gunicorn.py').write_text('workers = 4\nproc_name = "search"\n')
    fake.set_cwd(400, str(tmp_path / 'srv'))
    untitled(fake, 500, 'reports.wsgi:application')
    table = ProcessTable(procfs, LOG)
    assert names(table) == [
        ('billing', FROM_NAME_OPTION),
        ('reports.wsgi:application', FROM_APPLICATION),
        ('search', FROM_CONFIG_FILE),
        ('shop', FROM_TITLE),
        ('user accounts', FROM_ENVIRONMENT),
    ]


def test_a_configuration_file_reached_through_a_symbolic_link_is_not_read(fake, procfs, tmp_path):
    untitled(fake, 400, 'search.wsgi:app')  # the default ./gunicorn.conf.py
    (tmp_path / 'elsewhere.py').write_text('proc_name = "not-this"\n')
    srv = tmp_path / 'srv'
    srv.mkdir()
    (srv / 'gunicorn.conf.py').symlink_to(tmp_path / 'elsewhere.py')
    fake.set_cwd(400, str(srv))
    assert names(ProcessTable(procfs, LOG)) == [('search.wsgi:app', FROM_APPLICATION)]


def busy_host(fake):
    """200 processes that are not Gunicorn's, and one titled master `shop` with two workers."""
    for pid in range(1000, 1200):
        fake.add(pid, 1, ['/usr/bin/sleep', '1000'])
    titled(fake, 100, 'shop')


def test_a_run_looks_only_at_new_processes_and_lists_nothing_while_no_process_was_created(fake, procfs):
    busy_host(fake)
    set_forks(fake, 50)
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == [('shop', FROM_TITLE)]
    examined, listings = table.examined, table.listings
    assert names(table) == [('shop', FROM_TITLE)]
    assert (table.listings, table.examined) == (listings, examined)  # nothing created: the table is not even listed
    titled(fake, 300, 'billing', workers=1)
    set_forks(fake, 53)
    assert names(table) == [('billing', FROM_TITLE), ('shop', FROM_TITLE)]
    assert (table.listings, table.examined) == (listings + 1, examined + 2)


def test_a_shell_that_execs_gunicorn_is_found_through_the_workers_it_forks(fake, procfs):
    fake.add(100, 1, ['/bin/sh', '/entrypoint.sh'])
    set_forks(fake, 10)
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == []
    assert names(table) == []  # looked at twice as new; a shell both times
    titled(fake, 100, 'shop', workers=2)  # same pid: exec'd, then forked two workers
    set_forks(fake, 12)
    assert names(table) == [('shop', FROM_TITLE)]


def test_a_master_that_goes_is_no_longer_found_and_a_new_one_on_its_pid_is(fake, procfs):
    titled(fake, 100, 'shop')
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == [('shop', FROM_TITLE)]
    for pid in (100, 101, 102):
        fake.remove(pid)
    assert names(table) == []
    titled(fake, 100, 'billing')
    fake.set_stat(100, ppid=1, comm='gunicorn: maste', start=2000)
    assert names(table) == [('billing', FROM_TITLE)]


def test_a_python_program_that_is_not_gunicorn_is_read_once(fake, procfs):
    fake.add(100, 1, ['/usr/bin/python3', 'tool.py'], comm='python3')
    set_forks(fake, 1)
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == []
    assert names(table) == []  # new in the first listing: looked at once more
    examined = table.examined
    assert names(table) == []
    assert table.examined == examined
    assert table._watched == {}  # dropped once its command line said it is not Gunicorn


def test_discovery_applies_include_and_exclude_before_the_bound(fake, procfs):
    for n, app in enumerate(['api-a', 'api-b', 'api-c', 'api-c-canary', 'web']):
        titled(fake, 100 * (n + 1), app, workers=1)
    discovery = AppDiscovery(procfs, None, LOG, selection=AppSelection.of(['api-'], ['.*canary'], 2))
    trees = discovery.trees()
    assert sorted(t.app for t in trees) == ['api-a', 'api-b']
    assert discovery.left_out == ['api-c']


def test_list_apps_says_how_each_app_was_named_and_whether_it_is_reported(fake, procfs):
    titled(fake, 100, 'shop')
    titled(fake, 200, 'shop')
    untitled(fake, 300, '-n', 'billing', 'billing:app')
    found = list_apps(procfs, LOG, AppSelection.of(None, ['billing'], None))
    assert [(f.app, f.masters, f.named_by, f.reported) for f in found] == [
        ('billing', (300,), (FROM_NAME_OPTION,), False),
        ('shop', (100, 200), (FROM_TITLE,), True),
    ]


@pytest.mark.parametrize('root', ['/nonexistent-proc-root'])
def test_an_unreadable_process_table_is_said(root):
    seen = Sightings()
    assert ProcessTable(ProcFS(root), LOG).masters(seen) == []
    assert seen.unreadable_root.startswith(root)


def share_pids(fake, last_pid):
    """The fake root as the proc of this process's own PID namespace: `self` is this process, loadavg the last pid."""
    if not (fake.root / 'self').is_symlink():
        (fake.root / 'self').symlink_to(str(os.getpid()))
    (fake.root / 'loadavg').write_text('0.10 0.20 0.30 1/200 %d\n' % last_pid)


def set_tgid(fake, pid, tgid):
    status = fake.root / str(pid) / 'status'
    status.write_text(status.read_text() + 'Tgid:\t%d\n' % tgid)


def test_sharing_the_hosts_pids_a_run_looks_only_at_the_pids_allocated_since_the_last(fake, procfs):
    busy_host(fake)
    share_pids(fake, 1199)
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == [('shop', FROM_TITLE)]
    listings = table.listings
    examined = table.examined
    # A master and its worker start on pids 1300 and 1301; 1302 is a thread of the master, titled as it is.
    titled(fake, 1300, 'billing', workers=1)
    fake.add(1302, 1, 'gunicorn: master [billing]')
    for pid, tgid in ((1300, 1300), (1301, 1301), (1302, 1300)):
        set_tgid(fake, pid, tgid)
    share_pids(fake, 1302)
    assert names(table) == [('billing', FROM_TITLE), ('shop', FROM_TITLE)]
    assert table.listings == listings  # the table was not listed
    # The 103 pids allocated since, whether they still run or not: not the 200 other processes of the table.
    assert table.examined - examined == 103
    # Pids wrapped: the table is listed again (where, unlike in this fake root, no thread shows).
    fake.remove(1302)
    share_pids(fake, 400)
    assert names(table) == [('billing', FROM_TITLE), ('shop', FROM_TITLE)]
    assert table.listings == listings + 1


def test_a_new_process_that_execs_gunicorn_after_its_first_look_is_found_in_the_next_run(fake, procfs):
    fake.add(100, 1, ['/bin/sh', '-c', 'exec gunicorn'])
    share_pids(fake, 100)
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == []
    fake.add(101, 1, ['/bin/sh', '-c', 'exec gunicorn'])  # forked; its look shows the shell it was forked from
    share_pids(fake, 101)
    assert names(table) == []
    titled(fake, 101, 'shop', workers=0)  # exec'd: no new pid, but a new comm
    set_tgid(fake, 101, 101)
    assert names(table) == [('shop', FROM_TITLE)]


def test_after_pids_wrap_the_pids_allocated_on_both_sides_of_pid_max_are_looked_at(fake, procfs):
    (fake.root / 'sys' / 'kernel').mkdir(parents=True)
    (fake.root / 'sys' / 'kernel' / 'pid_max').write_text('2000\n')
    busy_host(fake)
    share_pids(fake, 1990)
    table = ProcessTable(procfs, LOG, Clock())
    assert names(table) == [('shop', FROM_TITLE)]
    listings, examined = table.listings, table.examined
    titled(fake, 1995, 'late', workers=0)
    titled(fake, 305, 'early', workers=0)
    for pid in (1995, 305):
        set_tgid(fake, pid, pid)
    share_pids(fake, 305)
    assert names(table) == [('early', FROM_TITLE), ('late', FROM_TITLE), ('shop', FROM_TITLE)]
    assert table.listings == listings
    assert table.examined - examined == 9 + 305  # 1991 to 1999, then 1 to 305
