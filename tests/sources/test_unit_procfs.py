from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from datadog_checks.gunicorn.sources.procfs import (
    CpuTime,
    ProcessAccessDenied,
    ProcessGone,
    ProcFS,
    ProcUnsupported,
    holds_event_poll,
    is_procfs,
    parse_argv0,
    parse_boot_time,
    parse_cmdline,
    parse_environ,
    parse_mount_options,
    parse_schedstat,
    parse_stat,
    parse_status,
    socket_inodes,
)

from ..common import wait_for
from ..fakeproc import FakeProc

CAPTURED = Path(__file__).resolve().parents[1] / 'fixtures' / 'proc'


def schedstat(procfs: ProcFS, pid: int) -> CpuTime:
    """The main thread's schedstat, through the batch reader the check uses."""
    found, failed = procfs.read_cpu_times([pid])
    if pid in failed:
        raise failed[pid]
    return found[pid]


def thread_schedstats(procfs: ProcFS, pid: int) -> CpuTime:
    """schedstat summed over every thread of `pid`, as the check reads a process it saw with several threads."""
    found, failed = procfs.read_cpu_times([pid], {pid: 2})
    if pid in failed:
        raise failed[pid]
    return found[pid]


def captured_pids():
    return sorted(int(p.name) for p in CAPTURED.iterdir())


def test_parse_stat_takes_comm_up_to_the_last_parenthesis():
    line = b'42 (a) (b) c) S 7 42 42 0 -1 0 0 0 0 0 11 3 0 0 20 0 4 0 9999 1000 250 18446744073709551615\n'
    stat = parse_stat(line)
    assert (stat.pid, stat.comm, stat.state, stat.ppid) == (42, 'a) (b) c', 'S', 7)
    assert (stat.utime_ticks, stat.stime_ticks, stat.num_threads, stat.start_ticks, stat.rss_pages) == (
        11,
        3,
        4,
        9999,
        250,
    )
    assert stat.cpu_ticks == 14
    assert stat.key.pid == 42 and stat.key.start_ticks == 9999


def test_parse_stat_of_a_real_gunicorn_tree():
    procfs = ProcFS(str(CAPTURED))
    stats = [procfs.read_stat(pid) for pid in captured_pids()]
    master = stats[0]
    assert master.comm == 'gunicorn: maste'
    assert all(s.ppid == master.pid for s in stats[1:4])  # dirty arbiter and two workers


@pytest.mark.parametrize(
    'data, title, argv',
    [
        (b'gunicorn: master [app]\0\0\0\0', 'gunicorn: master [app]', ['gunicorn: master [app]']),
        # setproctitle without a terminating NUL: psutil would split this on spaces.
        (b'gunicorn: master [my app]', 'gunicorn: master [my app]', ['gunicorn: master [my app]']),
        (
            b'/venv/bin/python\0/venv/bin/gunicorn\0-w\x002\0app:app\0',
            '/venv/bin/python',
            ['/venv/bin/python', '/venv/bin/gunicorn', '-w', '2', 'app:app'],
        ),
        (b'', '', []),  # zombies and kernel threads
        # A titled master: the title, then the rest of the old argv area as NULs (about 4 KB for a long command).
        (b'gunicorn: master [web]' + b'\0' * 4000, 'gunicorn: master [web]', ['gunicorn: master [web]']),
        (b'a\0\0b\0\0\0', 'a', ['a', '', 'b']),  # empty arguments inside the line are kept
    ],
)
def test_title_and_cmdline(data, title, argv):
    assert parse_argv0(data) == title
    assert parse_cmdline(data) == argv


def test_parse_schedstat():
    sched = parse_schedstat(b'123456789 42 7\n')
    assert (sched.on_cpu_ns, sched.run_delay_ns, sched.timeslices) == (123456789, 42, 7)


def test_children_of_every_thread(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: master [a]', threads=2)
    fake.set_children(10, [11, 12])
    fake.set_children(10, [13], tid=1001)
    assert ProcFS(str(tmp_path)).read_children(10) == {11, 12, 13}


def test_real_children_listing_of_the_captured_master():
    procfs = ProcFS(str(CAPTURED))
    master = captured_pids()[0]
    assert procfs.read_children(master) == set(captured_pids()[1:4])


def test_vanished_process_is_gone(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: master [a]')
    procfs = ProcFS(str(tmp_path))
    fake.remove(10)
    schedstat_of = partial(schedstat, procfs)
    for read in (procfs.read_stat, procfs.read_title, schedstat_of, procfs.read_children, procfs.read_comm):
        with pytest.raises(ProcessGone):
            read(10)


def test_missing_children_file_means_the_kernel_lacks_it(tmp_path):
    FakeProc(tmp_path).add(10, 1, 'gunicorn: master [a]')
    (tmp_path / '10' / 'task' / '10' / 'children').unlink()
    with pytest.raises(ProcUnsupported):
        ProcFS(str(tmp_path)).read_children(10)


def test_a_thread_exiting_during_the_listing_is_skipped(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: master [a]', threads=2)
    fake.set_children(10, [11])
    shutil.rmtree(tmp_path / '10' / 'task' / '1001')
    assert ProcFS(str(tmp_path)).read_children(10) == {11}


def test_permission_denied_is_its_own_error(tmp_path, monkeypatch):
    FakeProc(tmp_path).add(10, 1, 'gunicorn: master [a]')

    def deny(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')

    monkeypatch.setattr('datadog_checks.gunicorn.sources.procfs.os.open', deny)
    with pytest.raises(ProcessAccessDenied) as info:
        ProcFS(str(tmp_path)).read_stat(10)
    assert '10/stat' in str(info.value)


def test_pids_lists_only_processes(tmp_path):
    FakeProc(tmp_path).add(10, 1, 'x').add(20, 1, 'y')
    (tmp_path / 'self').mkdir()
    (tmp_path / 'net').mkdir()
    assert sorted(ProcFS(str(tmp_path)).pids()) == [10, 20]


def test_whole_cmdline_longer_than_one_read(tmp_path):
    long_arg = 'x' * 10000
    FakeProc(tmp_path).add(10, 1, ['python', long_arg, 'end'], nul_padding=0)
    assert ProcFS(str(tmp_path)).read_cmdline(10) == ['python', long_arg, 'end']


# Held files: real processes, because only /proc ties an open file to its process.


def _child() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only waits to be killed
        signal.pause()
        os._exit(0)
    return pid


def _open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def test_a_held_stat_follows_its_process_to_the_zombie_state_and_out():
    procfs = ProcFS('/proc', max_held=8)
    child = _child()
    try:
        assert procfs.read_stat(child).state in 'SR'
        assert procfs.held == 1
        assert procfs.read_stat(child).pid == child  # from the open file this time
        os.kill(child, signal.SIGKILL)
        while procfs.read_stat(child).state != 'Z':  # not reaped yet: the kernel still shows it
            time.sleep(0.01)
    finally:
        os.waitpid(child, 0)
    # Reaped: the open file fails (ESRCH), the pid is read by path again and nothing has it.
    with pytest.raises(ProcessGone):
        procfs.read_stat(child)
    assert procfs.held == 0


def test_a_held_title_follows_its_process_out():
    procfs = ProcFS('/proc', max_held=8)
    child = _child()
    try:
        assert procfs.read_title(child) == procfs.read_title(os.getpid())  # a fork shows its parent's title
        assert procfs.held == 2
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    with pytest.raises(ProcessGone):
        procfs.read_title(child)
    assert procfs.held == 1  # this process's


def test_files_unread_since_the_last_release_are_closed_and_close_closes_all():
    baseline = _open_fds()
    children = [_child(), _child()]
    try:
        procfs = ProcFS('/proc', max_held=8)
        for pid in children:
            procfs.read_stat(pid)
            schedstat(procfs, pid)
        assert procfs.held == 4 and _open_fds() == baseline + 4
        procfs.release_unused()  # every file was read since the (absent) previous release
        assert procfs.held == 4
        procfs.read_stat(children[0])
        procfs.release_unused()
        assert procfs.held == 1
        procfs.close()
        assert procfs.held == 0 and _open_fds() == baseline
        procfs.read_stat(children[0])  # a closed ProcFS still reads, by path
        assert procfs.held == 0
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_no_more_files_are_held_than_allowed():
    procfs = ProcFS('/proc', max_held=1)
    procfs.read_stat(os.getpid())
    schedstat(procfs, os.getpid())
    assert procfs.held == 1


def test_a_dropped_procfs_closes_its_files():
    baseline = _open_fds()
    procfs = ProcFS('/proc', max_held=8)
    procfs.read_stat(os.getpid())
    assert _open_fds() == baseline + 1
    del procfs
    assert _open_fds() == baseline


def test_a_tree_of_regular_files_is_never_held(tmp_path):
    # An open regular file keeps its contents after the fake process is removed; /proc would fail the read.
    FakeProc(tmp_path).add(100, 1, 'gunicorn: master [web]')
    procfs = ProcFS(str(tmp_path), max_held=8)
    procfs.read_stat(100)
    assert procfs.held == 0
    shutil.rmtree(tmp_path / '100')
    with pytest.raises(ProcessGone):
        procfs.read_stat(100)


def test_is_procfs_reads_the_mount_table(tmp_path):
    mountinfo = tmp_path / 'mountinfo'
    mountinfo.write_text(
        '22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n'
        '23 22 0:22 / /proc rw,nosuid shared:12 - proc proc rw\n'
        '24 22 0:23 / /host\\040root/proc rw shared:13 - proc proc rw\n'
    )
    assert is_procfs('/proc', str(mountinfo))
    assert is_procfs('/proc/1/task', str(mountinfo))
    assert is_procfs('/host root/proc', str(mountinfo))
    assert not is_procfs('/host root', str(mountinfo))
    assert not is_procfs('/procfs', str(mountinfo))
    assert not is_procfs('/proc', str(tmp_path / 'missing'))


def test_thread_schedstats_sum_every_thread(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: worker [a]', cpu_ns=5, threads=3)
    fake.set_thread_cpu(10, 1001, 7_000_000)
    procfs = ProcFS(str(tmp_path))
    assert schedstat(procfs, 10).on_cpu_ns == 5  # the main thread only
    assert thread_schedstats(procfs, 10).on_cpu_ns == 7_000_005
    shutil.rmtree(tmp_path / '10' / 'task' / '1001')  # a pool thread exiting during the listing
    assert thread_schedstats(procfs, 10).on_cpu_ns == 5
    with pytest.raises(ProcessGone):
        thread_schedstats(procfs, 11)


def test_fd_links(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: worker [a]')
    fake.set_fds(10, '/dev/null', 'socket:[123]', 'anon_inode:[eventpoll]', 'socket:[456]', 'pipe:[9]')
    links = ProcFS(str(tmp_path)).read_fd_links(10)
    assert socket_inodes(links) == {123, 456}
    assert holds_event_poll(links)
    assert not holds_event_poll(['socket:[1]', 'pipe:[2]'])
    with pytest.raises(ProcessGone):
        ProcFS(str(tmp_path)).read_fd_links(11)


def test_fd_links_of_this_process():
    with socket.socket() as sock:
        links = ProcFS().read_fd_links(os.getpid())
        assert os.fstat(sock.fileno()).st_ino in socket_inodes(links)


def test_status_gives_the_effective_uid_and_the_pid_in_its_own_namespace():
    status = b'Name:\tgunicorn\nUid:\t1000\t33\t33\t33\nGid:\t1000\t33\t33\t33\nNSpid:\t4242\t17\t1\n'
    assert parse_status(status, 4242) == (33, 1)
    # Before Linux 4.1 there is no NSpid: the process is in the reader's namespace as far as it can tell.
    assert parse_status(b'Uid:\t0\t0\t0\t0\n', 7) == (0, 7)
    with pytest.raises(ValueError):
        parse_status(b'Name:\tx\n', 7)


def test_real_status_and_cgroup_of_this_process():
    import os

    procfs = ProcFS('/proc')
    assert procfs.read_status(os.getpid()) == (os.geteuid(), os.getpid())
    assert procfs.read_cgroup(os.getpid()).count(b':') >= 2


def test_boot_time_from_proc_stat(tmp_path):
    (tmp_path / 'stat').write_bytes(b'cpu  1 2 3\nintr 1 2 3\nbtime 1700000000\nprocesses 99\n')
    assert ProcFS(str(tmp_path)).read_boot_time() == 1700000000
    assert parse_boot_time(b'cpu 1\nbtime 12\n') == 12
    (tmp_path / 'stat').write_bytes(b'cpu 1\n')
    with pytest.raises(ProcUnsupported):
        ProcFS(str(tmp_path)).read_boot_time()
    assert ProcFS('/proc').read_boot_time() > 1_000_000_000


def test_environ_keeps_only_the_variables_asked_for(tmp_path):
    FakeProc(tmp_path).add(10, 1, 'x')
    (tmp_path / '10' / 'environ').write_bytes(b'HOME=/srv\0SECRET_KEY=hunter2\0XDG_RUNTIME_DIR=/run/user/33\0EMPTY\0')
    env = ProcFS(str(tmp_path)).read_environ(10, frozenset({'HOME', 'XDG_RUNTIME_DIR'}))
    assert env == {'HOME': '/srv', 'XDG_RUNTIME_DIR': '/run/user/33'}
    assert parse_environ(b'A=1\0B=2', frozenset({'B'})) == {'B': '2'}


def test_mount_options_of_the_proc_root():
    mountinfo = (
        b'22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw,hidepid=invisible,gid=4\n'
        b'90 80 0:21 / /host/proc rw,relatime - proc proc rw\n'
    )
    assert 'hidepid=invisible' in parse_mount_options(mountinfo, '/proc')
    assert 'hidepid=invisible' not in parse_mount_options(mountinfo, '/host/proc')
    assert parse_mount_options(mountinfo, '/nowhere') is None
    assert 'rw' in ProcFS('/proc').mount_options()


# Several files in one call, and the threads of a process remembered between reads


def test_batch_reads_say_why_a_process_could_not_be_read(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'x', cpu_ns=5).add(11, 1, 'y', cpu_ns=6).add(12, 1, 'z')
    (tmp_path / '12' / 'schedstat').write_text('garbage\n')
    procfs = ProcFS(str(tmp_path))
    fake.remove(11)
    found, failed = procfs.read_cpu_times([10, 11, 12])
    assert found == {10: (5, 0)}
    assert isinstance(failed[11], ProcessGone) and isinstance(failed[12], ProcUnsupported)
    assert list(procfs.read_stats([12, 11, 10])) == [12, 10]
    assert procfs.read_stats([10])[10] == procfs.read_stat(10)


def test_batch_reads_of_held_files_follow_their_process_out():
    procfs = ProcFS('/proc', max_held=8)
    children = [_child(), _child()]
    try:
        procfs.read_cpu_times(children)
        assert procfs.held == 2
        found, failed = procfs.read_cpu_times(children)  # from the open files
        assert list(found) == children and not failed
        os.kill(children[0], signal.SIGKILL)
        os.waitpid(children[0], 0)
        found, failed = procfs.read_cpu_times(children)
        assert list(found) == children[1:] and isinstance(failed[children[0]], ProcessGone)
        assert procfs.held == 1
    finally:
        os.kill(children[1], signal.SIGKILL)
        os.waitpid(children[1], 0)


def test_threaded_pids_in_a_batch_are_summed_over_their_threads(tmp_path):
    fake = FakeProc(tmp_path).add(10, 1, 'x', cpu_ns=5, threads=2).add(11, 1, 'y', cpu_ns=6, threads=2)
    fake.set_thread_cpu(10, 1001, 100)
    fake.set_thread_cpu(11, 1101, 100)
    found, failed = ProcFS(str(tmp_path)).read_cpu_times([12, 11, 10], threads={11: 2, 12: 2, 10: 1})
    assert found == {11: (106, 0), 10: (5, 0)} and list(found) == [11, 10]
    assert list(failed) == [12] and isinstance(failed[12], ProcessGone)


def _listings(monkeypatch) -> list[int]:
    listed = []
    real = ProcFS._listdir
    monkeypatch.setattr(ProcFS, '_listdir', lambda self, pid, name: listed.append(pid) or real(self, pid, name))
    return listed


def test_remembered_threads_are_summed_until_their_count_changes(tmp_path, monkeypatch):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: worker [a]', cpu_ns=5, threads=2)
    procfs = ProcFS(str(tmp_path))
    listed = _listings(monkeypatch)
    assert thread_schedstats(procfs, 10).on_cpu_ns == 5
    fake.set_thread_cpu(10, 1001, 7)
    assert thread_schedstats(procfs, 10).on_cpu_ns == 12
    assert listed == [10]
    (tmp_path / '10' / 'task' / '1002').mkdir()  # a new pool thread
    fake.set_thread_cpu(10, 1002, 100)
    fake.set_stat(10, ppid=1, comm='gunicorn: worke', threads=3)
    assert thread_schedstats(procfs, 10).on_cpu_ns == 112
    assert listed == [10, 10]


def test_a_remembered_thread_replaced_by_another_is_listed_again(tmp_path, monkeypatch):
    fake = FakeProc(tmp_path).add(10, 1, 'gunicorn: worker [a]', cpu_ns=5, threads=2)
    fake.set_thread_cpu(10, 1001, 7)
    procfs = ProcFS(str(tmp_path))
    assert thread_schedstats(procfs, 10).on_cpu_ns == 12
    shutil.rmtree(tmp_path / '10' / 'task' / '1001')  # same count, another thread
    (tmp_path / '10' / 'task' / '1002').mkdir()
    fake.set_thread_cpu(10, 1002, 100)
    listed = _listings(monkeypatch)
    assert thread_schedstats(procfs, 10).on_cpu_ns == 105
    assert listed == [10]


def test_thread_lists_unused_since_the_last_release_are_forgotten(tmp_path, monkeypatch):
    FakeProc(tmp_path).add(10, 1, 'x', threads=2).add(11, 1, 'y', threads=2)
    procfs = ProcFS(str(tmp_path))
    thread_schedstats(procfs, 10)
    procfs.read_children(11)
    procfs.release_unused()
    thread_schedstats(procfs, 10)
    procfs.release_unused()
    listed = _listings(monkeypatch)
    thread_schedstats(procfs, 10)
    procfs.read_children(11, threads=2)
    assert listed == [11]


def test_held_thread_files_follow_their_process_out():
    # A process with a second thread; its per-thread schedstat files are held and fail once it is reaped.
    child = subprocess.Popen(
        [sys.executable, '-c', 'import sys, threading; threading.Thread(target=sys.stdin.read).start(); input()'],
        stdin=subprocess.PIPE,
    )
    procfs = ProcFS('/proc', max_held=8)
    try:
        wait_for(lambda: len(os.listdir('/proc/%d/task' % child.pid)) == 2, what='the second thread')
        first = thread_schedstats(procfs, child.pid)
        assert procfs.held == 2
        again = thread_schedstats(procfs, child.pid)  # stat too, to count the threads it remembers
        assert again.on_cpu_ns >= first.on_cpu_ns and procfs.held == 3
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProcessGone):
        thread_schedstats(procfs, child.pid)
    assert procfs.held == 2  # its stat was dropped when it failed; the threads' files go at the release after next
    procfs.release_unused()
    procfs.release_unused()
    assert procfs.held == 0 and child.pid not in procfs._threads


def test_a_real_thread_started_between_reads_is_summed():
    child = subprocess.Popen(
        [sys.executable, '-c', 'import threading; input(); threading.Thread(target=input).start(); input()'],
        stdin=subprocess.PIPE,
    )
    procfs = ProcFS('/proc', max_held=8)
    try:
        thread_schedstats(procfs, child.pid)
        assert procfs._threads[child.pid] == [str(child.pid)]  # the interpreter waits on its main thread
        child.stdin.write(b'\n')
        child.stdin.flush()
        wait_for(lambda: procfs.read_stat(child.pid).num_threads == 2, what='the second thread')
        thread_schedstats(procfs, child.pid)
        assert sorted(procfs._threads[child.pid]) == sorted(os.listdir('/proc/%d/task' % child.pid))
        assert len(procfs._threads[child.pid]) == 2
    finally:
        child.kill()
        child.wait()


def test_a_real_thread_replaced_by_another_is_listed_again():
    # Thread A exits and B starts: the count is the same, A's held file fails and the threads are listed again.
    script = (
        'import threading\nfor _ in range(2):\n    t = threading.Thread(target=input)\n    t.start()\n    t.join()\n'
    )
    child = subprocess.Popen([sys.executable, '-c', script], stdin=subprocess.PIPE)
    procfs = ProcFS('/proc', max_held=8)
    task = '/proc/%d/task' % child.pid
    try:
        first = wait_for(lambda: len(tids := os.listdir(task)) == 2 and tids, what='thread A')
        thread_schedstats(procfs, child.pid)
        assert sorted(procfs._threads[child.pid]) == sorted(first)
        child.stdin.write(b'\n')
        child.stdin.flush()
        second = wait_for(lambda: len(tids := os.listdir(task)) == 2 and set(tids) != set(first) and tids, what='B')
        thread_schedstats(procfs, child.pid)
        assert sorted(procfs._threads[child.pid]) == sorted(second)
    finally:
        child.kill()
        child.wait()


def test_uptime_is_the_clock_of_proc_uptime():
    # Read from the clock rather than the file on a proc root; /proc/uptime shows hundredths of a second, truncated.
    procfs = ProcFS('/proc')
    assert procfs._on_procfs
    before = procfs.read_uptime()
    with open('/proc/uptime', 'rb') as f:
        shown = float(f.read().split()[0])
    after = procfs.read_uptime()
    assert before - 0.01 < shown <= after + 1e-9
    # And the clock of process start times: this process started before now, and less than a day ago.
    age = after - procfs.read_stat(os.getpid()).start_ticks / os.sysconf('SC_CLK_TCK')
    assert 0 <= age < 86400


def test_stats_compare_by_value():
    line = b'42 (a b) S 7 42 42 0 -1 0 0 0 0 0 11 3 0 0 20 0 4 0 9999 1000 250 18446744073709551615\n'
    stat = parse_stat(line)
    assert stat == parse_stat(line) and hash(stat) == hash(parse_stat(line))
    assert stat != parse_stat(line.replace(b' 11 3 ', b' 12 3 '))
    assert stat.key == (42, 9999) and stat.cpu_ticks == 14
    assert repr(stat).startswith("Stat(pid=42, comm='a b', state='S', ppid=7,")


# Network namespaces and the host root


def test_shares_network_namespace(tmp_path):
    assert ProcFS('/proc').shares_network_namespace(os.getpid()) is True
    assert ProcFS('/proc/').shares_network_namespace(os.getpid()) is True
    # Unknown, not False: a process that is gone or unreadable gives no answer.
    assert ProcFS(str(tmp_path)).shares_network_namespace(os.getpid()) is None


def test_shares_network_namespace_without_access_to_ns_net(tmp_path):
    # An unprivileged Agent cannot stat another user's /proc/PID/ns/net; the inode of its net/tcp tells as well.
    (tmp_path / '77' / 'net').mkdir(parents=True)
    (tmp_path / '77' / 'net' / 'tcp').symlink_to('/proc/self/net/tcp')
    assert ProcFS(str(tmp_path)).shares_network_namespace(77) is True
    (tmp_path / '78' / 'net').mkdir(parents=True)
    (tmp_path / '78' / 'net' / 'tcp').write_text('another namespace\n')
    assert ProcFS(str(tmp_path)).shares_network_namespace(78) is False


@pytest.mark.parametrize(
    'root, host', [('/proc', ''), ('/proc/', ''), ('/host/proc', '/host'), ('/host/proc/', '/host'), ('/srv/p', '')]
)
def test_host_root(root, host):
    assert ProcFS(root).host_root == host


def test_mapped_paths_keep_order_without_duplicates_and_skip_anonymous_mappings():
    from datadog_checks.gunicorn.sources.procfs import parse_mapped_paths

    data = (
        b'55d0-55d1 r--p 00000000 08:01 1 /venv/bin/python3.13\n'
        b'7f00-7f01 rw-p 00000000 00:00 0 \n'
        b'7f01-7f02 r-xp 00000000 08:01 2 /venv/lib/python3.13/site-packages/setproctitle/_s.so\n'
        b'7f02-7f03 r--p 00001000 08:01 2 /venv/lib/python3.13/site-packages/setproctitle/_s.so\n'
        b'7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n'
        b'7f03-7f04 r--p 00000000 08:01 3 /srv/my app/lib.so (deleted)\n'
    )
    assert parse_mapped_paths(data) == [
        '/venv/bin/python3.13',
        '/venv/lib/python3.13/site-packages/setproctitle/_s.so',
        '/srv/my app/lib.so (deleted)',
    ]
