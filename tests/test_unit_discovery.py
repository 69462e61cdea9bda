"""Discovery on fake proc trees: shapes and races a real Gunicorn produces only for an instant."""

from __future__ import annotations

import logging

import pytest

from datadog_checks.gunicorn import discovery as discovery_module
from datadog_checks.gunicorn.discovery import Discovery
from datadog_checks.gunicorn.procfs import ProcFS

from .fakeproc import FakeProc

LOG = logging.getLogger('test')


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(tmp_path, app='a', clock=None):
    return Discovery(ProcFS(str(tmp_path)), app, LOG, **({'clock': clock} if clock else {}))


def app_tree(fake: FakeProc, master=100, name='a', workers=(101, 102), start=1000):
    fake.add(master, 1, 'gunicorn: master [%s]' % name, children=workers, start=start)
    for w in workers:
        fake.add(w, master, 'gunicorn: worker [%s]' % name)
    return fake


def pids(stats):
    return sorted(s.pid for s in stats)


def test_workers_are_only_the_worker_titled_children(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, workers=(101, 102, 103, 104, 105))
    fake.add(103, 100, 'gunicorn: dirty-arbiter', children=(110, 111))
    fake.add(110, 103, 'gunicorn: dirty-worker [a]')
    fake.add(111, 103, 'gunicorn: dirty-worker [a]')
    fake.add(104, 100, ['/bin/sh', '-c', 'something the app forked'])
    fake.add(105, 100, 'gunicorn: worker [other]')
    fake.add(200, 1, 'unrelated')
    (tree,) = make(tmp_path).trees()
    assert tree.master.pid == 100
    assert pids(tree.workers) == [101, 102]
    assert pids(tree.dirty_arbiters) == [103]
    assert pids(tree.dirty_workers) == [110, 111]


def test_usr2_upgrade_counts_the_new_masters_workers_once(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, workers=(101, 102, 150))
    fake.add(150, 100, 'gunicorn: master [a.2]', children=(151, 152))
    fake.add(151, 150, 'gunicorn: worker [a.2]')
    fake.add(152, 150, 'gunicorn: worker [a.2]')
    trees = make(tmp_path).trees()
    assert len(trees) == 1  # the new master is found by the walk too, but belongs to the old one's tree
    assert pids(trees[0].workers) == [101, 102, 151, 152]
    assert pids(trees[0].upgrade_masters) == [150]


def test_after_the_old_master_exits_the_promoted_master_is_found(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, workers=(101, 150))
    fake.add(150, 100, 'gunicorn: master [a.2]', children=(151,))
    fake.add(151, 150, 'gunicorn: worker [a.2]')
    d = make(tmp_path)
    assert pids(d.trees()[0].workers) == [101, 151]
    fake.remove(100)
    fake.remove(101)
    fake.add(150, 1, 'gunicorn: master [a.2]', children=(151,))  # re-parented, not yet renamed
    assert [(t.master.pid, pids(t.workers)) for t in d.trees()] == [(150, [151])]
    fake.add(150, 1, 'gunicorn: master [a]', children=(151,))  # renamed on promotion
    assert [(t.master.pid, pids(t.workers)) for t in d.trees()] == [(150, [151])]


def test_a_fresh_fork_with_the_masters_title_is_neither_worker_nor_upgrade(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, workers=(101, 102))
    fake.add(102, 100, 'gunicorn: master [a]')  # forked, title not set yet
    d = make(tmp_path)
    (tree,) = d.trees()
    assert pids(tree.workers) == [101] and tree.upgrade_masters == []
    fake.add(102, 100, 'gunicorn: worker [a]')  # a moment later: the title must be read again, not cached
    assert pids(d.trees()[0].workers) == [101, 102]


def test_known_master_is_verified_without_walking_the_table(tmp_path):
    app_tree(FakeProc(tmp_path))
    d = make(tmp_path)
    for _ in range(5):
        assert len(d.trees()) == 1
    assert d.scans == 1


def test_a_reused_pid_is_not_the_remembered_master(tmp_path):
    fake = app_tree(FakeProc(tmp_path))
    d = make(tmp_path)
    d.trees()
    app_tree(fake, start=2000)  # same pid, started later: a different master
    (tree,) = d.trees()
    assert d.scans == 2
    assert tree.master.start_ticks == 2000


def test_master_gone_means_no_tree(tmp_path):
    fake = app_tree(FakeProc(tmp_path))
    d = make(tmp_path)
    d.trees()
    fake.remove(100)
    assert d.trees() == []


def test_a_second_master_is_noticed_at_the_periodic_rescan(tmp_path):
    fake = app_tree(FakeProc(tmp_path))
    clock = Clock()
    d = make(tmp_path, clock=clock)
    assert len(d.trees()) == 1
    app_tree(fake, master=300, workers=(301,))
    assert len(d.trees()) == 1
    clock.now += discovery_module.RESCAN_SECONDS
    assert sorted(t.master.pid for t in d.trees()) == [100, 300]


def test_workers_that_vanish_or_changed_parent_are_skipped(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, workers=(101, 102, 103, 104))
    fake.remove(102)  # listed by the kernel, gone before its stat was read
    fake.add(103, 1, 'gunicorn: worker [a]')  # the children list raced with a re-parenting
    fake.add(104, 100, 'gunicorn: worker [a]', state='Z')  # exited, not reaped yet
    (tree,) = make(tmp_path).trees()
    assert pids(tree.workers) == [101]


def test_without_children_files_workers_are_found_by_parent_pid(tmp_path):
    app_tree(FakeProc(tmp_path))
    for pid in (100, 101, 102):
        (tmp_path / str(pid) / 'task' / str(pid) / 'children').unlink()
    d = make(tmp_path)
    assert pids(d.trees()[0].workers) == [101, 102]
    assert pids(d.trees()[0].workers) == [101, 102]


def test_masters_of_other_apps_and_similar_names_are_ignored(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, master=100, name='a2', workers=(101,))
    app_tree(fake, master=200, name='b', workers=(201,))
    assert make(tmp_path).trees() == []


def test_two_masters_with_one_name(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, master=100, workers=(101,))
    app_tree(fake, master=200, workers=(201, 202))
    trees = make(tmp_path).trees()
    assert sorted((t.master.pid, len(t.workers)) for t in trees) == [(100, 1), (200, 2)]


@pytest.mark.parametrize('name', ['my app', 'x:y/z', 'a [b] c', 'proj.wsgi:application'])
def test_names_with_spaces_brackets_colons_slashes(tmp_path, name):
    fake = FakeProc(tmp_path)
    app_tree(fake, name=name)
    fake.add(100, 1, 'gunicorn: master [%s]' % name, children=(101, 102), nul_padding=0)  # no NUL at all
    (tree,) = make(tmp_path, app=name).trees()
    assert pids(tree.workers) == [101, 102]


def test_unreadable_processes_are_counted(tmp_path, monkeypatch):
    FakeProc(tmp_path).add(10, 1, 'x').add(11, 1, 'y')
    d = make(tmp_path)
    real = ProcFS.read_comm

    def deny(self, pid):
        if pid == 11:
            from datadog_checks.gunicorn.procfs import ProcessAccessDenied

            raise ProcessAccessDenied(pid, 'comm', 'permission denied')
        return real(self, pid)

    monkeypatch.setattr(ProcFS, 'read_comm', deny)
    assert d.trees() == []
    assert d.denied == 1


def test_titles_of_workers_are_read_once(tmp_path, monkeypatch):
    app_tree(FakeProc(tmp_path))
    d = make(tmp_path)
    d.trees()
    reads = []
    real = ProcFS.read_title
    monkeypatch.setattr(ProcFS, 'read_title', lambda self, pid: reads.append(pid) or real(self, pid))
    d.trees()
    assert reads == [100]  # only the master's title is checked again
