"""diagnose on fake proc trees: the listing, the explanations, the suggested conf.yaml, and no secret ever printed."""

from __future__ import annotations

import os

import pytest
import yaml

from datadog_checks.gunicorn.cli.diagnose import LOG, diagnose, explain_missing, render, render_apps, suggested_config
from datadog_checks.gunicorn.collectors.app_discovery import AppSelection, list_apps
from datadog_checks.gunicorn.collectors.discovery import Sightings
from datadog_checks.gunicorn.sources.pidfile import StalePidFile
from datadog_checks.gunicorn.sources.procfs import ProcFS

from ..fakeproc import FakeProc

VENV = '/srv/venv/bin'


@pytest.fixture
def fake(tmp_path):
    proc = FakeProc(tmp_path / 'proc')
    (tmp_path / 'proc' / 'stat').write_text('btime 0\n')
    (tmp_path / 'proc' / 'self').mkdir()
    return proc


def procfs(tmp_path):
    return ProcFS(str(tmp_path / 'proc'))


def titled(fake, master, name, workers=2):
    kids = tuple(range(master + 1, master + 1 + workers))
    fake.add(master, 1, 'gunicorn: master [%s]' % name, children=kids)
    for pid in kids:
        fake.add(pid, master, 'gunicorn: worker [%s]' % name)


def untitled(fake, master, args, workers=2):
    argv = [VENV + '/python', VENV + '/gunicorn', *args]
    kids = tuple(range(master + 1, master + 1 + workers))
    fake.add(master, 1, argv, comm='gunicorn', children=kids)
    for pid in kids:
        fake.add(pid, master, argv, comm='gunicorn')


def config_of(text):
    return yaml.safe_load('\n'.join(line for line in text.splitlines() if not line.startswith('#')))


def test_a_running_app(tmp_path, fake):
    titled(fake, 100, 'web', workers=3)
    d = diagnose(procfs(tmp_path), 'web')
    assert d.ok
    text = render(d)
    assert '- web (pid 100)' in text and 'workers: 3' in text and 'titles: set' in text
    assert 'proc_name web: found master 100.' in text
    assert 'control socket: absent where this user can look' in text
    assert config_of(suggested_config(d)) == {'init_config': None, 'instances': [{'proc_name': 'web'}]}


def test_a_misspelled_name(tmp_path, fake):
    titled(fake, 100, 'shopfront')
    titled(fake, 200, 'billing')
    d = diagnose(procfs(tmp_path), 'shopfrnt')
    assert not d.ok
    text = render(d)
    assert 'No gunicorn process with name shopfrnt found' in text and 'Did you mean `shopfront`?' in text
    assert config_of(suggested_config(d))['instances'] == [{'proc_name': 'shopfront'}]


def test_missing_setproctitle(tmp_path, fake):
    untitled(fake, 100, ['-w', '2', '-k', 'gthread', '--threads', '4', '-n', 'web', '--pid', '/run/web.pid', 'app:app'])
    d = diagnose(procfs(tmp_path), 'web')
    assert d.ok
    text = render(d)
    assert 'titles: NOT set' in text and 'setproctitle' in text
    assert 'worker class: gthread' in text and 'workers: 2' in text
    assert 'command: /srv/venv/bin/python /srv/venv/bin/gunicorn -w 2 -k gthread' in text
    suggestion = suggested_config(d)
    assert '# Found by its command line: install setproctitle' in suggestion
    assert config_of(suggestion)['instances'] == [{'proc_name': 'web', 'pid_file': '/run/web.pid'}]
    # This user may not read the master's sockets and reaches no control socket: the binds are left to write.
    assert '# bind: [127.0.0.1:8000]' in suggestion


def test_the_suggested_conf_carries_the_binds_of_the_command_line_and_one_instance_per_application(tmp_path, fake):
    untitled(fake, 100, ['-b', '127.0.0.1:8000', '--bind', 'unix:/run/web.sock', '-n', 'web', 'app:app'])
    titled(fake, 300, 'shop-api')
    titled(fake, 400, 'shop-api.2')
    fake.set_children(300, [301, 302, 400])
    fake.set_stat(400, ppid=300, comm='gunicorn: maste')
    d = diagnose(procfs(tmp_path))
    suggestion = suggested_config(d)
    assert config_of(suggestion)['instances'] == [
        {'proc_name': 'web', 'bind': ['127.0.0.1:8000', 'unix:/run/web.sock']},
        {'proc_name': 'shop-api'},
    ]
    assert '--bind on its command line' in suggestion


def test_control_socket_candidates(tmp_path, fake):
    untitled(fake, 100, ['-n', 'a', 'app:app'])
    untitled(fake, 200, ['--no-control-socket', '-n', 'b', 'app:app'])
    runtime = tmp_path / 'runtime'
    runtime.mkdir()
    (tmp_path / 'proc' / '100' / 'environ').write_bytes(b'XDG_RUNTIME_DIR=%s\0SECRET=x\0' % str(runtime).encode())
    (tmp_path / 'proc' / '100' / 'status').write_text('Name:\tgunicorn\nUid:\t0\t0\t0\t0\n')
    sockets = {m.name: m.control_socket for m in diagnose(procfs(tmp_path)).masters}
    assert sockets['a'].startswith('absent where this user can look')
    assert 'SECRET' not in sockets['a']
    assert sockets['b'] == 'none: disabled by --no-control-socket on its command line'
    import socket

    # What listens there now is this test process, not master 100: nothing ties it to the master, and that is said.
    fake.set_net(100, unix=[(True, 1, 5, str(runtime / 'gunicorn.ctl'))])
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(runtime / 'gunicorn.ctl'))
        server.listen(1)
        sockets = {m.name: m.control_socket for m in diagnose(procfs(tmp_path)).masters}
    assert sockets['a'].startswith('not tied to this master: sockets listen in its network namespace at ')
    assert "%s/gunicorn.ctl (another master's (pid %d))" % (runtime, os.getpid()) in sockets['a']


def test_worker_class_when_not_on_the_command_line(tmp_path, fake):
    untitled(fake, 100, ['--threads', '3', 'a:app'])
    untitled(fake, 200, ['-c', 'conf.py', 'b:app'])
    untitled(fake, 300, ['c:app'])
    classes = {m.name: m.worker_class for m in diagnose(procfs(tmp_path)).masters}
    assert classes['a:app'].startswith('gthread')
    assert classes['b:app'].startswith('sync unless the configuration file')
    assert classes['c:app'] == 'sync (the default)'


def test_no_gunicorn_at_all(tmp_path, fake):
    fake.add(10, 1, ['/usr/sbin/sshd'])
    d = diagnose(procfs(tmp_path), 'web')
    assert not d.ok
    text = render(d)
    assert 'Gunicorn masters (0):' in text and 'No Gunicorn master is visible to the Agent at all' in text
    assert config_of(suggested_config(d))['instances'] == [{'proc_name': 'web'}]
    assert '# No running master matched' in suggested_config(d)


def test_no_proc_at_all(tmp_path):
    d = diagnose(ProcFS(str(tmp_path / 'nothing')), 'web')
    assert d.procfs_missing and not d.ok
    assert 'cannot run on macOS' in render(d)


def test_secrets_in_command_lines_are_never_printed(tmp_path, fake):
    untitled(
        fake,
        100,
        ['-n', 'web', '-e', 'DATABASE_URL=postgres://app:hunter2@db/app', '-e', 'SECRET_KEY=s3cr3t', 'app:app'],
    )
    text = render(diagnose(procfs(tmp_path), 'web'))
    assert 'hunter2' not in text and 's3cr3t' not in text
    assert 'DATABASE_URL=postgres://********@db/app' in text


def test_a_stale_pid_file(tmp_path, fake):
    titled(fake, 100, 'web')
    (tmp_path / 'web.pid').write_text('4242\n')
    d = diagnose(procfs(tmp_path), None, str(tmp_path / 'web.pid'))
    assert not d.ok
    assert 'is stale: pid 4242 is not running' in render(d)


def test_a_pid_file(tmp_path, fake):
    titled(fake, 100, 'web')
    (tmp_path / 'web.pid').write_text('100\n')
    d = diagnose(procfs(tmp_path), None, str(tmp_path / 'web.pid'))
    assert d.ok and 'names master 100' in render(d)


def test_explain_missing_short_forms():
    seen = Sightings(titled={'shopfront': [1]}, untitled={'api': [2]}, denied=3)
    text = explain_missing('shopfrnt', seen)
    assert 'Did you mean `shopfront`?' in text and 'pip install setproctitle' in text
    assert '3 processes could not be read' in text
    assert 'diagnose --proc-name shopfrnt' in text
    text = explain_missing('x', Sightings(), hidepid='hidepid=2')
    assert 'No Gunicorn master is visible' in text and 'hidepid=2' in text
    many = Sightings(titled={'app%d' % i: [i] for i in range(20)})
    assert 'and 15 more' in explain_missing('zzz', many)
    text = explain_missing(None, None, '/run/web.pid', StalePidFile('pid file /run/web.pid is stale: x'))
    assert text.startswith('No Gunicorn master found through pid_file: pid file /run/web.pid is stale: x.')
    assert 'diagnose --pid-file /run/web.pid' in text
    assert "--proc-name 'my app'" in explain_missing('my app', Sightings())


def test_a_relative_pid_file_is_refused_as_the_check_refuses_it(tmp_path, fake):
    titled(fake, 100, 'web')
    d = diagnose(procfs(tmp_path), pid_file='web3.pid')
    assert not d.ok
    assert 'pid file web3.pid: a relative pid_file is refused by the check' in render(d)


def test_heartbeat_ages_are_not_said_to_need_the_fds(tmp_path, fake):
    # Without ptrace-level access the control socket still gives them.
    titled(fake, 100, 'web')
    (fd,) = [s for s in diagnose(procfs(tmp_path), 'web').sources if s.what == '/proc/PID/fd']
    assert fd.feeds.startswith('worker heartbeat age without the control socket;')


def test_every_app_a_node_wide_instance_would_report_and_how_it_was_named(tmp_path, fake):
    titled(fake, 100, 'web')
    titled(fake, 200, 'web')
    untitled(fake, 300, ['-n', 'billing', 'billing:app'])
    untitled(fake, 400, ['reports.wsgi:application', '--password=hunter2'])
    text = render_apps(list_apps(procfs(tmp_path), LOG, AppSelection()))
    assert '  - web: master 100, 200, named by its title' in text
    assert '  - billing: master 300, named by --name on its command line' in text
    assert '  - reports.wsgi:application: master 400, named by the application on its command line' in text
    assert 'hunter2' not in text
    assert 'Applications for app_autodiscovery (3)' in text
    assert render_apps([]).endswith('(0), each reported as app:<NAME>:\n  none\n')
