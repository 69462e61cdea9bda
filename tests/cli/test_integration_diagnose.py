"""`python -m datadog_checks.gunicorn diagnose` against real Gunicorn servers and real processes of the test's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import psutil
import pytest
import yaml

from datadog_checks.gunicorn.cli.diagnose import diagnose, render
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ..common import as_nobody, wait_for
from ..gunicorn_env import APPS, REPO

pytestmark = [pytest.mark.integration, pytest.mark.every_agent]

SECRETS = ('hunter2', 's3cr3t', 'secretpw')


def run_diagnose(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, '-m', 'datadog_checks.gunicorn', 'diagnose', *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def suggested(out: str) -> dict:
    """The conf.yaml diagnose prints last, indented by four spaces."""
    block = out.split('A conf.yaml that would work (gunicorn.d/conf.yaml):\n', 1)[1]
    lines = [line[4:] for line in block.splitlines() if line.startswith('    ') and not line.strip().startswith('#')]
    return yaml.safe_load('\n'.join(lines))


def unique(prefix: str) -> str:
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def test_a_running_app(gunicorn):
    server = gunicorn(workers=3, name=unique('diag-running'))
    done = run_diagnose('--proc-name', server.name)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '- %s (pid %d)' % (server.name, server.master_pid) in out
    section = out.split('- %s (pid %d)' % (server.name, server.master_pid), 1)[1].split('\n  - ', 1)[0]
    assert 'workers: 3' in section and 'titles: set' in section
    assert 'user: root (uid 0)' in section or 'user: ' in section
    # 27.0.1 keeps its control socket in $XDG_RUNTIME_DIR, which the harness points at the test's directory.
    socket_path = server.default_control_socket
    assert (
        "control socket: %s (found from the master's own listening socket), answered by this master" % socket_path
        in section
    )
    assert 'proc_name %s: found master %d.' % (server.name, server.master_pid) in out
    assert suggested(out) == {'init_config': None, 'instances': [{'proc_name': server.name}]}


def test_an_old_gunicorn_has_no_control_socket(gunicorn):
    server = gunicorn(version='23.0.0', workers=1, name=unique('diag-old'))
    out = run_diagnose('--proc-name', server.name).stdout
    section = out.split('(pid %d)' % server.master_pid, 1)[1].split('\n  - ', 1)[0]
    assert 'version: 23.0.0 (from its installation)' in section
    assert 'control socket: none: Gunicorn 23.0.0 has no control socket (it came with 25.1)' in section


def test_a_misspelled_name(gunicorn):
    server = gunicorn(workers=1, name=unique('diag-shopfront'))
    typo = server.name.replace('shopfront', 'shopfrnt')
    done = run_diagnose('--proc-name', typo)
    assert done.returncode == 1
    assert 'No gunicorn process with name %s found' % typo in done.stdout
    assert 'Did you mean' in done.stdout and '`%s`' % server.name in done.stdout
    assert suggested(done.stdout)['instances'] == [{'proc_name': server.name}]


def test_missing_setproctitle_and_secrets_on_the_command_line(gunicorn, tmp_path):
    # `-e` sets environment variables for the application: a real place where Gunicorn command lines carry secrets.
    server = gunicorn(
        workers=2,
        name=unique('diag-notitle'),
        setproctitle=False,
        args=[
            '-e',
            'DATABASE_URL=postgres://app:s3cr3t@db/app',
            '-e',
            'API_TOKEN=hunter2',
            '--pid',
            str(tmp_path / 'p'),
        ],
    )
    done = run_diagnose('--proc-name', server.name)
    assert done.returncode == 0, done.stdout
    out = done.stdout
    section = out.split('(pid %d)' % server.master_pid, 1)[1].split('\n  - ', 1)[0]
    assert 'titles: NOT set' in section and 'workers: 2' in section
    assert 'worker class: sync (the default)' in section
    socket_path = server.default_control_socket
    assert (
        "control socket: %s (found from the master's own listening socket), answered by this master" % socket_path
        in section
    )
    assert 'DATABASE_URL=postgres://********@db/app' in section and 'API_TOKEN=********' in section
    assert not any(secret in out for secret in SECRETS)
    assert 'Found from the command line because titles are missing' in out and 'pip install setproctitle' in out
    assert suggested(out)['instances'] == [{'proc_name': server.name, 'pid_file': str(tmp_path / 'p')}]


def test_a_fake_gunicorn_with_secrets_is_listed_redacted(tmp_path):
    # Gunicorn refuses unknown options, so a process of the test's own plays one: a script named `gunicorn`.
    script = tmp_path / 'gunicorn'
    script.write_text('import time\ntime.sleep(120)\n')
    name = unique('diag-fake')
    proc = subprocess.Popen(
        [sys.executable, str(script), '--password=secretpw', '-n', name, 'postgres://user:hunter2@host/db']
    )
    try:
        wait_for(lambda: len(psutil.Process(proc.pid).cmdline()) > 2, 10, 'the fake to start')
        out = run_diagnose('--proc-name', name).stdout
    finally:
        proc.kill()
        proc.wait(10)
    assert '- %s (pid %d)' % (name, proc.pid) in out
    assert "'--password=********'" in out and 'postgres://********@host/db' in out
    assert not any(secret in out for secret in SECRETS)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which('unshare'), reason='needs root to make a PID namespace')
def test_no_gunicorn_at_all():
    # A fresh PID namespace with its own /proc: nothing from the other tests of this machine is visible there.
    done = run_diagnose('--proc-name', 'web', prefix=('unshare', '--pid', '--fork', '--mount-proc'))
    if 'unshare failed' in done.stderr or 'Operation not permitted' in done.stderr:
        pytest.skip('no PID namespaces here: %s' % done.stderr.strip())
    assert done.returncode == 1
    assert 'Gunicorn masters (0):' in done.stdout
    assert 'No Gunicorn master is visible to the Agent at all' in done.stdout
    assert suggested(done.stdout)['instances'] == [{'proc_name': 'web'}]


def test_a_stale_pid_file(tmp_path):
    pid_file = tmp_path / 'web.pid'
    pid_file.write_text('%d\n' % (2**22 - 1))  # the largest pid a kernel may hand out, used by no process here
    done = run_diagnose('--pid-file', str(pid_file))
    assert done.returncode == 1
    assert 'pid file %s: pid file %s is stale' % (pid_file, pid_file) in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root to become another user')
def test_what_an_unprivileged_user_may_read(gunicorn):
    server = gunicorn(workers=1, name=unique('diag-unpriv'))
    # Once as root first: every lazy import is done before the child, as `nobody`, could no longer read them.
    assert '/proc/PID/fd: yes' in render(diagnose(ProcFS('/proc'), server.name))
    out = as_nobody(lambda: render(diagnose(ProcFS('/proc'), server.name)))
    assert 'Seen as: nobody (uid 65534); CAP_SYS_PTRACE: no' in out
    assert 'workers: 1' in out  # discovery itself needs no privilege
    assert '/proc/PID/stat, schedstat, task/*/children: yes' in out
    assert '/proc/PID/net/tcp, tcp6, unix: yes' in out
    assert '/proc/PID/fd: NO' in out and 'Permission denied' in out
    assert '/proc/PID/smaps_rollup: NO -> gunicorn.memory.pss' in out


# The conf.yaml diagnose prints, pasted as it is and run from another directory, as the Agent does


def run_pasted(text: str, conf_dir: str) -> dict:
    """The runner on `text` written to conf_dir/conf.yaml, from the root directory: its JSON report and exit status."""
    conf = os.path.join(conf_dir, 'conf.yaml')
    with open(conf, 'w') as f:
        f.write(text)
    os.chmod(conf, 0o644)

    def run() -> dict:
        import contextlib
        import io
        import json

        from datadog_checks.gunicorn.cli import runner

        here = os.getcwd()
        os.chdir('/')  # the Agent's working directory is not the application's
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = runner.main(['--conf', conf, '--json'])
        finally:
            os.chdir(here)  # in this process, later tests resolve paths against the repository
        assert code == 0, (code, out.getvalue(), err.getvalue())
        (report,) = json.loads(out.getvalue())
        return report

    return run() if os.geteuid() != 0 or not PASTE_AS_NOBODY[0] else as_nobody(run)


PASTE_AS_NOBODY = [False]


def working(report: dict) -> int:
    (value,) = [
        s['points'][0][1]
        for s in report['series']
        if s['metric'] == 'gunicorn.workers' and 'state:working' in s['tags']
    ]
    return value


def conf_text(out: str) -> str:
    block = out.split('A conf.yaml that would work (gunicorn.d/conf.yaml):\n', 1)[1]
    return '\n'.join(line[4:] for line in block.splitlines() if line.startswith('    ')) + '\n'


@pytest.mark.parametrize('privileged', [True, False], ids=['root', 'nobody'])
def test_the_suggested_conf_works_as_pasted_from_another_directory(gunicorn, tmp_path, privileged):
    if not privileged and os.geteuid() != 0:
        pytest.skip('needs root to become nobody')
    if privileged and os.geteuid() != 0:
        pytest.skip('needs root for ptrace-level access')
    import tempfile

    shared = tempfile.mkdtemp(prefix='paste-')
    os.chmod(shared, 0o755)
    try:
        ctl = os.path.join(shared, 'orders.ctl')  # not named gunicorn.ctl: no default path has it
        pid_file = tmp_path / 'web3.pid'
        if privileged:
            # Untitled, so that the command line shows --pid: relative, as users write it, which Gunicorn resolves in
            # its --chdir and the Agent would resolve in its own directory.
            server = gunicorn(
                workers=2,
                name=unique('diag-paste'),
                setproctitle=False,
                args=['--pid', os.path.relpath(pid_file, APPS), '--control-socket', ctl],
            )
            wait_for(lambda: os.path.exists(ctl), 30, 'the control socket')
            text = conf_text(render(diagnose(ProcFS('/proc'), server.name)))
            instance = yaml.safe_load(text)['instances'][0]
            assert instance == {'proc_name': server.name, 'pid_file': str(pid_file)}, text
            assert "# Gunicorn's --pid, made absolute from the master's working directory" in text
        else:
            # Titled, with a socket `nobody` may open under a name no default has: found only because diagnose was
            # given it, so the conf must carry it, and through it the listeners that count waiting sync workers.
            server = gunicorn(
                workers=2, name=unique('diag-paste'), args=['--control-socket', ctl, '--control-socket-mode', '0o666']
            )
            wait_for(lambda: os.path.exists(ctl), 30, 'the control socket')
            render(diagnose(ProcFS('/proc'), server.name))  # imports done as root first
            text = as_nobody(lambda: conf_text(render(diagnose(ProcFS('/proc'), server.name, control_socket=ctl))))
            instance = yaml.safe_load(text)['instances'][0]
            assert instance == {'proc_name': server.name, 'control_socket': ctl}, text
            assert '# The control socket diagnose was given' in text
        held = [server.hold('/sleep/30') for _ in range(2)]
        PASTE_AS_NOBODY[0] = not privileged
        try:
            reports = []
            wait_for(lambda: working(reports.append(run_pasted(text, shared)) or reports[-1]) == 2, 30, '2 working')
            report = reports[-1]
        finally:
            PASTE_AS_NOBODY[0] = False
        # Nothing about the pid file, the socket or the listeners: only that the untitled master has no title, and
        # for `nobody` that a titled master's installation (its version) is out of its sight, as the conf says.
        assert report['errors'] == [], report['errors']
        expected = 'runs without process titles' if privileged else 'No Gunicorn version metadata'
        assert all(expected in w for w in report['warnings']), report['warnings']
        if not privileged:
            assert '# gunicorn: /srv/app/venv/bin/gunicorn' in text
        assert [sc['status'] for sc in report['service_checks']] == [0]
        names = {s['metric'] for s in report['series']}
        assert 'gunicorn.workers.target' in names and 'gunicorn.worker.heartbeat_age.max' in names, sorted(names)
        del held
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root for ptrace-level access')
def test_a_titled_masters_socket_of_any_name_is_found_from_its_fds(gunicorn, tmp_path):
    ctl = str(tmp_path / 'orders.ctl')
    server = gunicorn(workers=1, name=unique('diag-anyname'), args=['--control-socket', ctl])
    wait_for(lambda: os.path.exists(ctl), 30, 'the control socket')
    out = render(diagnose(ProcFS('/proc'), server.name))
    section = out.split('(pid %d)' % server.master_pid, 1)[1].split('\n  - ', 1)[0]
    assert "control socket: %s (found from the master's own listening socket), answered by this master" % ctl in section
