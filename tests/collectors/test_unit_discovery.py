"""Discovery on fake proc trees: shapes and races a real Gunicorn produces only for an instant."""

from __future__ import annotations

import logging
import shutil

import pytest

from datadog_checks.gunicorn.collectors import discovery as discovery_module
from datadog_checks.gunicorn.collectors.discovery import Discovery
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ..fakeproc import FakeProc

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
            from datadog_checks.gunicorn.sources.procfs import ProcessAccessDenied

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


# Without titles: raw command lines (no setproctitle, macOS-like platforms, the `--preload` window)

VENV = '/srv/venv/bin'


def raw(name='web', *extra):
    return [VENV + '/python', VENV + '/gunicorn', '-w', '2', '-n', name, *extra, 'app:app']


def untitled_tree(fake: FakeProc, master=100, name='web', workers=(101, 102), parent=1, extra=(), comm='gunicorn'):
    fake.add(parent, 0, ['/bin/bash'], children=(master,)) if parent != 1 else None
    fake.add(master, parent, raw(name, *extra), comm=comm, children=workers)
    for w in workers:
        fake.add(w, master, raw(name, *extra), comm=comm)
    return fake


def test_untitled_master_is_found_by_its_command_line_name(tmp_path):
    fake = untitled_tree(FakeProc(tmp_path), parent=50)
    fake.add(103, 100, ['/usr/bin/convert', 'in.png', 'out.jpg'])  # a subprocess of the application
    fake.set_children(100, (101, 102, 103))
    d = make(tmp_path, app='web')
    (tree,) = d.trees()
    assert (tree.master.pid, pids(tree.workers), tree.titled, tree.name) == (100, [101, 102], False, 'web')
    assert tree.titles_missing and not tree.starting
    assert d.sightings.untitled == {'web': [100]} and d.sightings.untitled_examined


def test_untitled_without_a_name_matches_the_app_module(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, [VENV + '/python', VENV + '/gunicorn', 'proj.wsgi:application'], comm='gunicorn', children=(101,))
    fake.add(101, 100, [VENV + '/python', VENV + '/gunicorn', 'proj.wsgi:application'], comm='gunicorn')
    assert [pids(t.workers) for t in make(tmp_path, app='proj.wsgi:application').trees()] == [[101]]
    assert make(tmp_path, app='web').trees() == []


def test_untitled_other_names_are_not_matched(tmp_path):
    untitled_tree(FakeProc(tmp_path), name='web2')
    d = make(tmp_path, app='web')
    assert d.trees() == []
    assert d.sightings.untitled == {'web2': [100]}


def test_python_m_gunicorn_is_found_through_its_interpreter_comm(tmp_path):
    fake = FakeProc(tmp_path)
    argv = ['/usr/bin/python3.12', '-m', 'gunicorn', '-n', 'web', 'app:app']
    fake.add(100, 1, argv, comm='python3.12', children=(101,))
    fake.add(101, 100, argv, comm='python3.12')
    assert [pids(t.workers) for t in make(tmp_path, app='web').trees()] == [[101]]


def test_only_gunicorn_and_python_processes_have_their_command_lines_read(tmp_path, monkeypatch):
    fake = untitled_tree(FakeProc(tmp_path))
    fake.add(200, 1, raw('web'), comm='nginx')  # whatever its command line says, its comm rules it out
    fake.add(201, 1, ['/usr/sbin/sshd'])
    reads = []
    real = ProcFS.read_cmdline
    monkeypatch.setattr(ProcFS, 'read_cmdline', lambda self, pid: reads.append(pid) or real(self, pid))
    make(tmp_path, app='web').trees()
    assert 200 not in reads and 201 not in reads


def test_command_lines_are_not_read_when_a_titled_master_matches(tmp_path, monkeypatch):
    app_tree(FakeProc(tmp_path), name='web')
    untitled_tree(FakeProc(tmp_path), master=300, name='other', workers=(301,))
    reads = []
    real = ProcFS.read_cmdline
    monkeypatch.setattr(ProcFS, 'read_cmdline', lambda self, pid: reads.append(pid) or real(self, pid))
    d = make(tmp_path, app='web')
    assert len(d.trees()) == 1
    assert reads == [] and not d.sightings.untitled_examined


def test_untitled_steady_state_reads_little(tmp_path, monkeypatch):
    untitled_tree(FakeProc(tmp_path))
    d = make(tmp_path, app='web')
    d.trees()
    reads = []
    real = ProcFS.read_cmdline
    monkeypatch.setattr(ProcFS, 'read_cmdline', lambda self, pid: reads.append(pid) or real(self, pid))
    for _ in range(3):
        assert pids(d.trees()[0].workers) == [101, 102]
    assert d.scans == 1  # the remembered master is verified, not searched for
    assert reads == []  # and the workers' command lines were read once, on the first run


def test_untitled_usr2_upgrade(tmp_path):
    fake = untitled_tree(FakeProc(tmp_path), workers=(101, 102, 150))
    # USR2 re-executes sys.executable: the new master's comm is the interpreter's, its command line the same.
    fake.add(150, 100, raw('web'), comm='python', children=(151, 152))
    fake.add(151, 150, raw('web'), comm='python')
    fake.add(152, 150, raw('web'), comm='python')
    d = make(tmp_path, app='web')
    (tree,) = d.trees()
    assert pids(tree.workers) == [101, 102, 151, 152] and pids(tree.upgrade_masters) == [150]
    # The old master exits: the new one is re-parented and becomes the master.
    for pid in (100, 101, 102):
        fake.remove(pid)
    fake.add(150, 1, raw('web'), comm='python', children=(151, 152))
    assert [(t.master.pid, pids(t.workers)) for t in d.trees()] == [(150, [151, 152])]


def test_untitled_upgrade_master_named_by_the_upgrade_pid_file(tmp_path):
    fake = FakeProc(tmp_path)
    (tmp_path / 'stat').write_text('btime 0\n')
    argv = ['/usr/bin/python3', '-m', 'gunicorn', '-n', 'web', 'app:app']
    fake.add(100, 1, argv, comm='python3', children=(101, 150))
    fake.add(101, 100, argv, comm='python3')
    fake.add(150, 100, argv, comm='python3', children=(151,))  # `python -m gunicorn`: the same comm after exec
    fake.add(151, 150, argv, comm='python3')
    pid_file = tmp_path / 'web.pid'
    pid_file.write_text('100\n')
    (tmp_path / 'web.pid.2').write_text('150\n')
    d = Discovery(ProcFS(str(tmp_path)), None, LOG, pid_file=str(pid_file))
    (tree,) = d.trees()
    assert pids(tree.upgrade_masters) == [150] and pids(tree.workers) == [101, 151]
    assert tree.name == 'web' and not tree.titled


def test_untitled_upgrade_of_a_master_whose_comm_is_the_interpreter(tmp_path):
    # `python -m gunicorn` (or a master promoted by an earlier USR2): a re-executed child shows the same comm.
    fake = FakeProc(tmp_path)
    argv = ['/usr/bin/python3', '-m', 'gunicorn', '-n', 'web', 'app:app']
    fake.add(100, 1, argv, comm='python3', children=(101, 102, 150))
    fake.add(101, 100, argv, comm='python3')
    fake.add(102, 100, argv, comm='python3')
    fake.add(150, 100, argv, comm='python3', children=(151, 152))
    fake.add(151, 150, argv, comm='python3')
    fake.add(152, 150, argv, comm='python3')
    (tree,) = make(tmp_path, app='web').trees()
    assert pids(tree.upgrade_masters) == [150] and pids(tree.workers) == [101, 102, 151, 152]


def test_untitled_dirty_arbiter_when_the_command_declares_dirty_apps(tmp_path):
    fake = untitled_tree(FakeProc(tmp_path), workers=(101, 102, 103), extra=('--dirty-app', 'dirty:Tasks'))
    fake.set_children(103, (110, 111))
    fake.add(110, 103, raw('web', '--dirty-app', 'dirty:Tasks'))
    fake.add(111, 103, raw('web', '--dirty-app', 'dirty:Tasks'))
    (tree,) = make(tmp_path, app='web').trees()
    assert pids(tree.workers) == [101, 102]
    assert pids(tree.dirty_arbiters) == [103] and pids(tree.dirty_workers) == [110, 111]


def test_preload_window_then_titles(tmp_path):
    fake = FakeProc(tmp_path)
    fake.add(100, 1, raw('web', '--preload'), comm='gunicorn')  # importing the app: raw argv, no workers yet
    d = make(tmp_path, app='web')
    (tree,) = d.trees()
    assert tree.starting and not tree.titles_missing and tree.workers == []
    # Import done: the title is set, workers are forked with theirs.
    app_tree(fake, name='web')
    (tree,) = d.trees()
    assert tree.titled and pids(tree.workers) == [101, 102]
    assert d.scans == 1  # the same master, recognised by pid and start time through its change of title


def test_an_untitled_master_that_changes_command_is_searched_again(tmp_path):
    untitled_tree(FakeProc(tmp_path))
    d = make(tmp_path, app='web')
    d.trees()
    FakeProc(tmp_path).add(100, 1, 'gunicorn: worker [web]', children=())  # pid reused by another titled process
    FakeProc(tmp_path).remove(101)
    FakeProc(tmp_path).remove(102)
    assert d.trees() == []
    assert d.scans == 2


def test_sightings_explain_a_miss(tmp_path):
    fake = FakeProc(tmp_path)
    app_tree(fake, master=100, name='webb', workers=(101,))
    untitled_tree(fake, master=200, name='api', workers=(201,))
    d = make(tmp_path, app='web')
    assert d.trees() == []
    assert d.sightings.titled == {'webb': [100]}
    assert d.sightings.untitled == {'api': [200]}
    assert d.sightings.processes >= 4


# Pid files


def test_pid_file_masters_without_a_name(tmp_path):
    app_tree(FakeProc(tmp_path), name='web')
    (tmp_path / 'stat').write_text('btime 0\n')
    (tmp_path / 'web.pid').write_text('100\n')
    d = Discovery(ProcFS(str(tmp_path)), None, LOG, pid_file=str(tmp_path / 'web.pid'))
    (tree,) = d.trees()
    assert (tree.master.pid, tree.app, pids(tree.workers)) == (100, 'web', [101, 102])
    assert d.scans == 0  # no walk of the process table at all


def test_a_stale_pid_file_falls_back_to_the_name(tmp_path):
    app_tree(FakeProc(tmp_path), name='web')
    (tmp_path / 'web.pid').write_text('4242\n')
    d = Discovery(ProcFS(str(tmp_path)), 'web', LOG, pid_file=str(tmp_path / 'web.pid'))
    (tree,) = d.trees()
    assert tree.master.pid == 100
    assert 'pid 4242 is not running' in str(d.pid_file_problem)


def test_a_stale_pid_file_without_a_name_finds_nothing(tmp_path):
    app_tree(FakeProc(tmp_path), name='web')
    d = Discovery(ProcFS(str(tmp_path)), None, LOG, pid_file=str(tmp_path / 'absent.pid'))
    assert d.trees() == []
    assert 'does not exist' in str(d.pid_file_problem)


# The master's threads: remembered between runs, listed again when they change


def listings_of(monkeypatch, pid: int) -> list[str]:
    """Every listing of /proc/PID/task from now on."""
    listed = []
    real = ProcFS._listdir
    monkeypatch.setattr(
        ProcFS, '_listdir', lambda self, p, name: (listed.append(name) if p == pid else None) or real(self, p, name)
    )
    return listed


def test_the_steady_state_does_not_list_the_masters_threads(tmp_path, monkeypatch):
    fake = app_tree(FakeProc(tmp_path), workers=(101,))
    fake.add(100, 1, 'gunicorn: master [a]', children=(101,), threads=2)  # the control socket's thread
    d = make(tmp_path)
    d.trees()
    listed = listings_of(monkeypatch, 100)
    for _ in range(3):
        assert pids(d.trees()[0].workers) == [101]
    assert listed == []


def test_a_master_thread_replaced_by_another_between_runs(tmp_path, monkeypatch):
    # Same thread count, different thread: its children (and the new thread's) are found by listing again.
    fake = app_tree(FakeProc(tmp_path), workers=(101, 102, 103))
    fake.add(100, 1, 'gunicorn: master [a]', children=(101,), threads=2)
    fake.set_children(100, (102,), tid=10001)
    d = make(tmp_path)
    assert pids(d.trees()[0].workers) == [101, 102]
    shutil.rmtree(tmp_path / '100' / 'task' / '10001')
    (tmp_path / '100' / 'task' / '10002').mkdir()
    fake.set_children(100, (102, 103), tid=10002)
    listed = listings_of(monkeypatch, 100)
    assert pids(d.trees()[0].workers) == [101, 102, 103]
    assert listed == ['task']
    assert pids(d.trees()[0].workers) == [101, 102, 103]
    assert listed == ['task']  # and the new list is remembered


def test_a_new_master_thread_is_listed(tmp_path, monkeypatch):
    fake = app_tree(FakeProc(tmp_path), workers=(101, 102))
    fake.add(100, 1, 'gunicorn: master [a]', children=(101,))
    d = make(tmp_path)
    assert pids(d.trees()[0].workers) == [101]
    (tmp_path / '100' / 'task' / '10001').mkdir()
    fake.set_children(100, (102,), tid=10001)
    fake.set_stat(100, ppid=1, comm='gunicorn: maste', threads=2)
    listed = listings_of(monkeypatch, 100)
    assert pids(d.trees()[0].workers) == [101, 102]
    assert listed == ['task']
