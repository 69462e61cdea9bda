"""How an untitled master is named, and what of its configuration file the check will read."""

from __future__ import annotations

import os

import pytest

from datadog_checks.gunicorn.sources.app_names import (
    CONFIG_FILE_MAX_BYTES,
    FROM_APPLICATION,
    FROM_CONFIG_FILE,
    FROM_DEFAULT,
    FROM_ENVIRONMENT,
    FROM_NAME_OPTION,
    parse_config_proc_name,
    untitled_name,
)
from datadog_checks.gunicorn.sources.cmdline import parse_gunicorn
from datadog_checks.gunicorn.sources.procfs import ProcessAccessDenied, ProcTooLarge, ProcUnsupported


@pytest.mark.parametrize(
    'source, expected',
    [
        (b'proc_name = "shop"\n', 'shop'),
        (b"workers = 4\nproc_name: str = 'shop'\nproc_name = 'last'\n", 'last'),
        (b'import os\nproc_name = os.environ["APP"]\n', None),  # computed at run time: unknown without running it
        (b'def f():\n    proc_name = "inner"\n', None),  # not at the top level
        (b'proc_name = ""\n', None),
        (b'proc_name = "app:create_app(password=\'x\')"\n', 'app:create_app'),  # redacted as titles are
        (b'proc_name = (\n', None),
        (b'\xff\xfe\x00', None),
    ],
)
def test_the_literal_proc_name_of_a_configuration_file(source, expected):
    assert parse_config_proc_name(source) == expected


def master(fake, pid, *args):
    argv = ['/venv/bin/python', '/venv/bin/gunicorn', *args]
    fake.add(pid, 1, argv, comm='gunicorn')
    return parse_gunicorn(argv)


def test_the_command_line_wins_then_the_environment_then_the_file(fake, procfs, tmp_path):
    (tmp_path / 'gunicorn.conf.py').write_text('proc_name = "from-file"\n')
    command = master(fake, 10, '-n', 'from-option', 'app:app')
    fake.set_environ(10, GUNICORN_CMD_ARGS='--name from-env')
    fake.set_cwd(10, str(tmp_path))
    assert untitled_name(procfs, 10, command).source == FROM_NAME_OPTION
    command = master(fake, 10, 'app:app')
    assert untitled_name(procfs, 10, command).name == 'from-env'
    assert untitled_name(procfs, 10, command).source == FROM_ENVIRONMENT
    fake.set_environ(10, GUNICORN_CMD_ARGS='--workers 3')
    assert (untitled_name(procfs, 10, command).name, untitled_name(procfs, 10, command).source) == (
        'from-file',
        FROM_CONFIG_FILE,
    )
    (tmp_path / 'gunicorn.conf.py').unlink()
    assert untitled_name(procfs, 10, command).source == FROM_APPLICATION
    assert untitled_name(procfs, 10, master(fake, 10)).source == FROM_DEFAULT


def test_the_environment_may_name_the_configuration_file(fake, procfs, tmp_path):
    (tmp_path / 'conf.py').write_text('proc_name = "from-file"\n')
    command = master(fake, 10, 'app:app')
    fake.set_environ(10, GUNICORN_CMD_ARGS='-c %s' % (tmp_path / 'conf.py'))
    os.symlink('/', fake.root / '10' / 'root')
    assert untitled_name(procfs, 10, command).name == 'from-file'


def test_what_is_not_a_small_regular_file_by_a_plain_path_is_not_read(fake, procfs, tmp_path):
    fake.add(10, 1, 'x')
    fake.set_cwd(10, str(tmp_path))
    os.mkfifo(tmp_path / 'fifo')
    (tmp_path / 'big.py').write_bytes(b'#' * (CONFIG_FILE_MAX_BYTES + 1))
    (tmp_path / 'link.py').symlink_to(tmp_path / 'big.py')
    (tmp_path / 'dir').symlink_to(tmp_path)
    (tmp_path / 'ok.py').write_text('x = 1\n')
    assert procfs.read_file_of(10, 'ok.py', CONFIG_FILE_MAX_BYTES) == b'x = 1\n'
    assert procfs.read_file_of(10, './ok.py', CONFIG_FILE_MAX_BYTES) == b'x = 1\n'
    with pytest.raises(ProcessAccessDenied, match='not a regular file'):
        procfs.read_file_of(10, 'fifo', CONFIG_FILE_MAX_BYTES)  # would block a plain open()
    with pytest.raises(ProcTooLarge):
        procfs.read_file_of(10, 'big.py', CONFIG_FILE_MAX_BYTES)
    with pytest.raises(ProcessAccessDenied):
        procfs.read_file_of(10, 'link.py', CONFIG_FILE_MAX_BYTES)
    with pytest.raises(ProcessAccessDenied):
        procfs.read_file_of(10, 'dir/ok.py', CONFIG_FILE_MAX_BYTES)
    with pytest.raises(ProcessAccessDenied, match='not a plain path'):
        procfs.read_file_of(10, '../etc/passwd', CONFIG_FILE_MAX_BYTES)
    with pytest.raises(ProcUnsupported, match='no such file'):
        procfs.read_file_of(10, 'missing.py', CONFIG_FILE_MAX_BYTES)
