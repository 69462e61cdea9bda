"""The runner's `--conf`: a file it cannot use is one line naming the file and the problem, exit status 2, and never
a traceback or the file's content."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from datadog_checks.gunicorn.cli import runner

from ..common import as_nobody

SECRET = 'hunter2-not-to-be-shown'


def run_conf(path: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = runner.main(['--conf', path])
    return code, out.getvalue(), err.getvalue()


def assert_one_line(code: int, out: str, err: str, path: str, problem: str) -> None:
    assert (code, out) == (2, '')
    assert err.count('\n') == 1 and err.startswith('error: %s: ' % path) and problem in err, err
    assert 'Traceback' not in err and SECRET not in err


@pytest.mark.parametrize(
    'content, problem',
    [
        ('instances: [5]\n', 'each item of `instances:` must be a mapping'),
        ('instances: []\n', 'an `instances:` list of at least one instance'),
        ('init_config:\n', 'an `instances:` list of at least one instance'),
        ('- proc_name: web\n', 'an `instances:` list of at least one instance'),
        ('init_config: [1]\ninstances:\n  - proc_name: web\n', '`init_config:` must be a mapping'),
        ('instances:\n  - proc_name: [%s\n' % SECRET, 'not valid YAML at line'),
        ('', 'an `instances:` list of at least one instance'),
    ],
)
def test_a_conf_of_the_wrong_shape(tmp_path, content, problem):
    conf = tmp_path / 'conf.yaml'
    conf.write_text(content)
    assert_one_line(*run_conf(str(conf)), str(conf), problem)


def test_a_conf_that_is_not_text(tmp_path):
    conf = tmp_path / 'conf.yaml'
    conf.write_bytes(b'instances:\n  - proc_name: \xff\xfe' + SECRET.encode())
    assert_one_line(*run_conf(str(conf)), str(conf), 'not UTF-8 text')


def test_a_missing_conf(tmp_path):
    path = str(tmp_path / 'nowhere.yaml')
    assert_one_line(*run_conf(path), path, 'no such file')


def test_a_directory_as_conf(tmp_path):
    assert_one_line(*run_conf(str(tmp_path)), str(tmp_path), 'a directory')


def test_an_unreadable_conf(tmp_path):
    conf = tmp_path / 'conf.yaml'
    conf.write_text('instances:\n  - proc_name: %s\n' % SECRET)
    conf.chmod(0o600)
    if os.geteuid() == 0:
        # Root reads any file: ask as `nobody`, to whom the 0600 file and its directory are closed.
        tmp_path.chmod(0o755)
        code, out, err = as_nobody(lambda: run_conf(str(conf)))
    else:
        conf.chmod(0)
        code, out, err = run_conf(str(conf))
    assert_one_line(code, out, err, str(conf), 'permission denied')


@pytest.mark.parametrize(
    'instance, problem',
    [
        (
            'proc_name: web\n    metric_patterns: {include: gunicorn.workers}',
            'metric_patterns: `include` must be a list',
        ),
        ('pid_file: web3.pid', "pid_file must be an absolute path, got 'web3.pid'"),
        ('proc_name: web\n    tags: env:prod', 'tags must be a list of tags'),
    ],
)
def test_a_configuration_the_check_refuses_is_one_line_and_exit_2(tmp_path, instance, problem):
    conf = tmp_path / 'conf.yaml'
    conf.write_text('instances:\n  - proc_name: ok\n  - %s\n' % instance)
    code, out, err = run_conf(str(conf))
    assert (code, out) == (2, '')
    assert err.count('\n') == 1 and err.startswith('error: %s, instance 2: ' % conf) and problem in err, err
    assert 'Traceback' not in err


def test_no_master_found_is_exit_3_and_unknown_options_are_shown(tmp_path):
    conf = tmp_path / 'conf.yaml'
    conf.write_text('instances:\n  - proc_name: no-such-app-%s\n    proc_nmae: x\n' % os.getpid())
    code, out, err = run_conf(str(conf))
    assert code == runner.EXIT_NO_MASTER == 3, err
    assert 'Warning: unknown option `proc_nmae` in this instance is ignored: did you mean `proc_name`?' in out
