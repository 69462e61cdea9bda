"""Pid files on fake proc trees: live masters, stale files, reused pids, USR2's `.2` file, and their messages."""

from __future__ import annotations

import logging
import os

import pytest

from datadog_checks.gunicorn.sources import pidfile as pidfile_module
from datadog_checks.gunicorn.sources.pidfile import (
    NotAMaster,
    PidFileInvalid,
    PidFileMissing,
    PidFiles,
    PidFileUnreadable,
    StalePidFile,
    parse_pid_file,
    read_pid_file,
)
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ..fakeproc import FakeProc

LOG = logging.getLogger('test')
BOOT = 1_700_000_000
TICKS = os.sysconf('SC_CLK_TCK')
VENV = '/srv/venv/bin'
RAW = [VENV + '/python', VENV + '/gunicorn', '-w', '2', '-n', 'web', 'app:app']


@pytest.fixture
def fake(tmp_path):
    proc = FakeProc(tmp_path / 'proc')
    (tmp_path / 'proc' / 'stat').write_text('cpu  1 2 3 4\nbtime %d\nprocesses 1\n' % BOOT)
    return proc


def started(seconds_after_boot: float) -> int:
    return int(seconds_after_boot * TICKS)


def write_pid(tmp_path, pid, written_after_boot: float, name='web.pid'):
    path = tmp_path / name
    path.write_text('%d\n' % pid)
    os.utime(path, (BOOT + written_after_boot, BOOT + written_after_boot))
    return str(path)


def resolver(tmp_path, path, **kwargs):
    return PidFiles(ProcFS(str(tmp_path / 'proc')), path, LOG, **kwargs)


def test_parse_pid_file():
    assert parse_pid_file(b'4242\n') == 4242
    for bad in (b'', b'\n', b'abc', b'-1', b'0', b'12 13'):
        with pytest.raises(ValueError):
            parse_pid_file(bad)


def test_read_errors_say_what_to_check(tmp_path):
    with pytest.raises(PidFileMissing, match=r'does not exist: is Gunicorn running with `--pid'):
        read_pid_file(str(tmp_path / 'absent.pid'))
    (tmp_path / 'junk.pid').write_text('not a pid\n')
    with pytest.raises(PidFileInvalid, match='does not hold a pid'):
        read_pid_file(str(tmp_path / 'junk.pid'))
    (tmp_path / 'huge.pid').write_text('1' * 1000)
    with pytest.raises(PidFileInvalid, match='more than 64 bytes'):
        read_pid_file(str(tmp_path / 'huge.pid'))


@pytest.mark.parametrize(
    'content, described',
    [
        (b'hunter2\n', '8 bytes that are not a pid'),  # a secret reached through a symbolic link
        (b'', 'empty'),
        (b'\xff\xfe\x00secret', 'binary data'),
        (b'4194305\n', 'not a pid'),  # beyond PID_MAX_LIMIT
    ],
)
def test_a_pid_file_that_holds_no_pid_is_described_never_quoted(tmp_path, content, described):
    secret = tmp_path / 'credentials'
    secret.write_bytes(content)
    (tmp_path / 'app.pid').symlink_to(secret)
    with pytest.raises(PidFileInvalid, match=described) as info:
        read_pid_file(str(tmp_path / 'app.pid'))
    assert 'hunter2' not in str(info.value) and 'secret' not in str(info.value).replace(str(tmp_path), '')


@pytest.mark.parametrize('kind', ['a directory', 'a FIFO', 'a device'])
def test_a_pid_file_that_is_not_a_file_is_not_read(tmp_path, kind):
    path = tmp_path / 'app.pid'
    if kind == 'a directory':
        path.mkdir()
    elif kind == 'a FIFO':
        os.mkfifo(path)  # a blocking read would wait for a writer forever
    else:
        path.symlink_to('/dev/zero')  # a read would return whatever the device gives
    with pytest.raises(PidFileInvalid, match='is %s, not a file' % kind):
        read_pid_file(str(path))


def test_a_titled_master_older_than_its_file(tmp_path, fake):
    fake.add(100, 1, 'gunicorn: master [web]', start=started(10))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    result = resolver(tmp_path, path).masters()
    assert [(m.stat.pid, m.name, m.command) for m in result.masters] == [(100, 'web', None)]
    assert result.problem is None


def test_an_untitled_master_is_named_by_its_command_line(tmp_path, fake):
    fake.add(100, 1, RAW, start=started(10))
    fake.add(101, 100, RAW, start=started(12))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    (master,) = resolver(tmp_path, path).masters().masters
    assert master.name == 'web' and master.command.pid_file is None


def test_a_dead_pid_is_a_stale_file(tmp_path, fake):
    path = write_pid(tmp_path, 4242, written_after_boot=11)
    result = resolver(tmp_path, path).masters()
    assert result.masters == [] and isinstance(result.problem, StalePidFile)
    assert 'is stale: pid 4242 is not running' in str(result.problem)
    fake.add(4242, 1, 'gunicorn: master [web]', state='Z', start=started(10))
    with pytest.raises(StalePidFile, match='has exited'):
        resolver(tmp_path, path).master(path)


def test_a_pid_reused_by_another_program(tmp_path, fake):
    fake.add(100, 1, ['/usr/bin/python3', 'worker.py', '--password=hunter2'], start=started(500))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    with pytest.raises(StalePidFile) as info:
        resolver(tmp_path, path).master(path)
    message = str(info.value)
    assert 'is stale: pid 100 was reused by `/usr/bin/python3 worker.py' in message
    assert 'started after the file was written' in message
    assert 'hunter2' not in message


def test_a_pid_file_naming_an_older_program_that_is_not_gunicorn(tmp_path, fake):
    fake.add(100, 1, ['/usr/sbin/nginx', '-g', 'daemon off;'], start=started(5))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    with pytest.raises(NotAMaster, match=r'names pid 100, which is not Gunicorn but `/usr/sbin/nginx'):
        resolver(tmp_path, path).master(path)


@pytest.mark.parametrize(
    'title, what', [('gunicorn: worker [web]', 'a Gunicorn worker'), ('gunicorn: dirty-arbiter', 'dirty-arbiter')]
)
def test_a_pid_file_naming_a_titled_worker(tmp_path, fake, title, what):
    fake.add(100, 1, title, start=started(10))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    with pytest.raises(NotAMaster, match=what):
        resolver(tmp_path, path).master(path)


def test_a_pid_file_naming_an_untitled_worker(tmp_path, fake):
    fake.add(100, 1, RAW, start=started(1))
    fake.add(101, 100, RAW, start=started(2))
    path = write_pid(tmp_path, 101, written_after_boot=11)
    with pytest.raises(NotAMaster, match='a Gunicorn worker of master 100, not the master'):
        resolver(tmp_path, path).master(path)


def test_another_gunicorn_master_on_a_reused_pid(tmp_path, fake):
    fake.add(100, 1, 'gunicorn: master [other]', start=started(500))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    with pytest.raises(StalePidFile, match='master started after the file was written'):
        resolver(tmp_path, path).master(path)


def test_the_clock_tolerance(tmp_path, fake):
    fake.add(100, 1, 'gunicorn: master [web]', start=started(12))  # one second "after" its own file
    path = write_pid(tmp_path, 100, written_after_boot=11)
    assert resolver(tmp_path, path).master(path).stat.pid == 100


def test_a_restarted_container_keeps_its_old_file(tmp_path, fake):
    # Gunicorn does not rewrite a file that already holds its own pid (pidfile.py create): same pid 7 after a restart.
    fake.add(7, 1, [*RAW, '--pid', '/run/web.pid'], start=started(500))
    path = write_pid(tmp_path, 7, written_after_boot=11)
    assert resolver(tmp_path, path).master(path).stat.pid == 7
    fake.add(7, 1, 'gunicorn: master [web]', start=started(500))
    assert resolver(tmp_path, path, expected_name='web').master(path).stat.pid == 7
    with pytest.raises(StalePidFile):
        resolver(tmp_path, path, expected_name='api').master(path)


def test_usr2_upgrade_files(tmp_path, fake):
    fake.add(100, 1, 'gunicorn: master [web]', start=started(10), children=(150,))
    fake.add(150, 100, 'gunicorn: master [web.2]', start=started(100))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    write_pid(tmp_path, 150, written_after_boot=101, name='web.pid.2')
    files = resolver(tmp_path, path)
    assert [(m.stat.pid, m.path.endswith('.2')) for m in files.masters().masters] == [(100, False), (150, True)]
    # The old master exits and removes its file; the new one still has only `.2` until it is promoted.
    fake.remove(100)
    os.unlink(path)
    result = files.masters()
    assert [m.stat.pid for m in result.masters] == [150] and result.problem is None
    # Promotion: `.2` is renamed to the original name.
    os.rename(path + '.2', path)
    fake.add(150, 1, 'gunicorn: master [web]', start=started(100))
    assert [(m.stat.pid, m.name) for m in files.masters().masters] == [(150, 'web')]


def test_a_stale_upgrade_file_does_not_hide_the_master(tmp_path, fake):
    fake.add(100, 1, 'gunicorn: master [web]', start=started(10))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    write_pid(tmp_path, 999, written_after_boot=50, name='web.pid.2')
    result = resolver(tmp_path, path).masters()
    assert [m.stat.pid for m in result.masters] == [100] and result.problem is None


def test_a_master_is_dated_once_per_file_version(tmp_path, fake, monkeypatch):
    fake.add(100, 1, RAW, start=started(10))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    files = resolver(tmp_path, path)
    dated = []
    real = ProcFS.read_boot_time
    monkeypatch.setattr(ProcFS, 'read_boot_time', lambda self: dated.append(1) or real(self))
    for _ in range(3):
        assert files.master(path).name == 'web'
    assert len(dated) == 1
    # The preload window ends: the master sets its title and is from then on a titled master.
    fake.add(100, 1, 'gunicorn: master [web]', start=started(10))
    master = files.master(path)
    assert master.command is None and master.name == 'web'
    # The master dies and its pid comes back as something else, same file: checked from scratch.
    fake.add(100, 1, ['/bin/sleep', '1000'], start=started(900))
    with pytest.raises(StalePidFile, match='reused by `/bin/sleep 1000`'):
        files.master(path)


def test_an_unreadable_process(tmp_path, fake, monkeypatch):
    fake.add(100, 1, 'gunicorn: master [web]', start=started(10))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    os.chmod(tmp_path / 'proc' / '100' / 'stat', 0)
    if os.geteuid() == 0:
        from datadog_checks.gunicorn.sources.procfs import ProcessAccessDenied

        def deny(self, pid):
            raise ProcessAccessDenied(pid, 'stat', 'permission denied')

        monkeypatch.setattr(ProcFS, 'read_stat', deny)
    with pytest.raises(PidFileUnreadable, match='cannot read'):
        resolver(tmp_path, path).master(path)


def test_without_a_boot_time_the_age_is_not_checked(tmp_path, fake):
    (tmp_path / 'proc' / 'stat').unlink()
    fake.add(100, 1, 'gunicorn: master [web]', start=started(500))
    path = write_pid(tmp_path, 100, written_after_boot=11)
    assert resolver(tmp_path, path).master(path).stat.pid == 100
    assert pidfile_module.START_TOLERANCE_SECONDS > 0
