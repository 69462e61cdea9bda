"""Real Gunicorn servers for the tests, each in its own cached virtualenv, the way an application runs beside the Agent.

A virtualenv per (Python, Gunicorn version, setproctitle or not) is created once under `<repo>/.cache/` and reused;
a file lock makes concurrent test processes wait for one another instead of installing twice. Servers bind to
loopback only, run in their own session so that everything they fork can be killed at the end, and are waited on
with bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

from datadog_checks.gunicorn.sources.control_socket.locate import SOCKET_NAME, explicit_socket_path
from datadog_checks.gunicorn.sources.procfs import ProcFS
from datadog_checks.gunicorn.sources.sockets.proc_net import read_net_unix

from .common import wait_for

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / 'apps'


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """GUNICORN_TEST_CACHE (default `<repo>/.cache`), made absolute against the directory it is read in: each server
    starts in its own directory (`cwd=tmp_path`), where a relative path to its virtualenv names nothing."""
    return Path(environ.get('GUNICORN_TEST_CACHE', REPO / '.cache')).absolute()


CACHE = cache_dir()

# The oldest release users still run, the last before the control socket, and the newest.
GUNICORN_VERSIONS = ('20.1.0', '23.0.0', '27.0.1')
NEWEST = GUNICORN_VERSIONS[-1]

_started_groups: set[int] = set()


def _refuse_in_unit_tests() -> None:
    # `-m "not integration"` must stay quick and need no Gunicorn: a test that starts one belongs in a
    # test_integration_* file. pytest names the running test in this variable (its nodeid, file first).
    current = os.environ.get('PYTEST_CURRENT_TEST', '')
    if Path(current.split('::')[0]).name.startswith('test_unit_'):
        raise RuntimeError('%s starts a real Gunicorn: move it to a test_integration_* file' % current.split(' ')[0])


def _base_python() -> str:
    # Build the application's virtualenv from the interpreter under the test virtualenv, not from the test
    # virtualenv itself: the application must not see the check's packages.
    return getattr(sys, '_base_executable', None) or sys.executable


def cached_venv(tag: str, packages: list[str]) -> Path:
    """A virtualenv under the cache with `packages` installed, created once; a file lock makes concurrent test
    processes wait for one another instead of installing twice."""
    venv = CACHE / 'venvs' / tag
    ready = venv / '.ready'
    if ready.exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ('.%s.lock' % tag), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return venv
        subprocess.run([_base_python(), '-m', 'venv', '--clear', str(venv)], check=True, timeout=300)
        install = [str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
        done = subprocess.run([*install, *packages], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, 'pip install %s failed:\n%s%s' % (' '.join(packages), done.stdout, done.stderr)
        ready.write_text('\n'.join(packages))
    return venv


# Third-party worker classes and what they run, pinned so that the worker-class table in the README stays what the tests
# measured: uvicorn's workers (both the uvicorn-worker package and uvicorn's own deprecated one), FastAPI for a real
# ASGI application, gevent and tornado for Gunicorn's own classes that need them.
WORKER_PACKAGES = (
    'uvicorn==0.55.0',
    'uvicorn-worker==0.4.0',
    'fastapi==0.165.0',
    'gevent==26.9.0',
    'tornado==6.6.1',
    # Gunicorn 27's gevent worker imports it (its `gevent` extra brings it).
    'packaging==26.4',
)


def gunicorn_venv(version: str = NEWEST, setproctitle: bool = True, workers_packages: bool = False) -> Path:
    """Return a virtualenv with gunicorn==version (and setproctitle unless asked not to), creating it once; with
    `workers_packages`, also the WORKER_PACKAGES (a separate virtualenv: most servers need none of them)."""
    tag = 'py%d.%d-gunicorn-%s%s%s' % (
        sys.version_info[0],
        sys.version_info[1],
        version,
        '' if setproctitle else '-notitle',
        # The list's digest: a virtualenv made from an older list is never taken for this one.
        '-workers-%s' % hashlib.sha256(' '.join(WORKER_PACKAGES).encode()).hexdigest()[:8] if workers_packages else '',
    )
    packages = ['gunicorn==%s' % version]
    if workers_packages:
        packages += WORKER_PACKAGES
    if setproctitle:
        packages.append('setproctitle')
    if version.startswith('20.'):
        # 20.x loads workers through pkg_resources, which newer setuptools no longer ships.
        packages.append('setuptools<70')
    return cached_venv(tag, packages)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def proc_title(proc: psutil.Process) -> str:
    """The process title as `ps` shows it (arguments joined), or '' when the process is gone."""
    try:
        return ' '.join(a for a in proc.cmdline() if a)
    except psutil.Error:
        return ''


class Gunicorn:
    """One Gunicorn master started from its own virtualenv, bound to loopback, stopped with everything it forked."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        version: str = NEWEST,
        name: str | None = '',
        workers: int = 2,
        args: tuple[str, ...] | list[str] = (),
        app: str = 'app:app',
        setproctitle: bool = True,
        bind: str | None = None,
        env: dict[str, str] | None = None,
        workers_packages: bool = False,
    ):
        self.tmp_path = Path(tmp_path)
        self.version = version
        # A name of its own by default: other tests' servers on the host must never be summed with this one.
        self.name = name if name != '' else 'gtest-%s' % uuid.uuid4().hex[:8]
        self.workers = workers
        self.args = list(args)
        self.app = app
        self.setproctitle = setproctitle
        self.port = None if bind else free_port()
        self.bind = bind or '127.0.0.1:%d' % self.port
        self.extra_env = env or {}
        self.error_log = self.tmp_path / 'error.log'
        self.access_log = self.tmp_path / 'access.log'
        self.output = self.tmp_path / 'gunicorn.out'
        # Each server's own XDG_RUNTIME_DIR, so that its default control-socket path is private to the test.
        self.runtime_dir = self.tmp_path / 'runtime'
        self.proc: subprocess.Popen | None = None
        self.venv = gunicorn_venv(version, setproctitle, workers_packages)

    # Lifecycle

    def command(self) -> list[str]:
        cmd = [str(self.venv / 'bin' / 'gunicorn'), '--chdir', str(APPS), '-b', self.bind, '-w', str(self.workers)]
        if self.name is not None:
            cmd += ['-n', self.name]
        cmd += ['--error-logfile', str(self.error_log), '--access-logfile', str(self.access_log)]
        return cmd + self.args + [self.app]

    def start(self, wait: bool = True) -> Gunicorn:
        _refuse_in_unit_tests()
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        with open(self.output, 'ab') as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                cwd=self.tmp_path,
            )
        _started_groups.add(self.proc.pid)
        if wait:
            self.wait_ready()
        return self

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)
        env['XDG_RUNTIME_DIR'] = str(self.runtime_dir)
        env.update(self.extra_env)
        return env

    def wait_ready(self, workers: int | None = None, timeout: float = 30.0) -> None:
        expected = self.workers if workers is None else workers
        if self.setproctitle:
            wait_for(lambda: self.master_title_set(), timeout, 'the master title of %s' % self.describe())
        wait_for(lambda: len(self.worker_pids()) == expected, timeout, '%d workers of %s' % (expected, self.describe()))
        if self.port:
            wait_for(self._accepts, timeout, 'port %s to accept' % self.port)
        if self.control_socket is not None:
            # Gunicorn 25.1+ binds it from a thread after the first workers boot: a test that runs the check as soon
            # as the workers answer would otherwise race that bind.
            path = str(self.control_socket)
            wait_for(lambda: path in _listening_unix_paths(), timeout, 'the control socket %s to listen' % path)
        self.wait_quiet(timeout=timeout)

    def wait_quiet(self, timeout: float = 30.0, window: float = 0.1, max_cpu_ns: int = 1_000_000) -> None:
        """Wait until no worker of any master spends CPU for a whole window: a titled worker still imports the app."""

        def quiet() -> bool:
            pids = [p for m in self.titled('gunicorn: master [') for p in self.worker_pids(m)] or self.worker_pids()
            before = {p: _cpu_ns(p) for p in pids}
            time.sleep(window)
            return all(_cpu_ns(p) - ns <= max_cpu_ns for p, ns in before.items())

        wait_for(quiet, timeout, 'the workers of %s to go idle' % self.describe(), interval=0)

    def describe(self) -> str:
        tail = self.output.read_text(errors='replace')[-2000:] if self.output.exists() else ''
        if self.error_log.exists():
            tail += self.error_log.read_text(errors='replace')[-2000:]
        return 'gunicorn %s (%s)\n%s' % (self.version, ' '.join(self.command()), tail)

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        _kill_group(pgid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        _started_groups.discard(pgid)

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # What the process table says (ground truth, read independently of the check)

    @property
    def default_control_socket(self) -> Path:
        """Where Gunicorn 25.1+ binds its control socket unless told another path: $XDG_RUNTIME_DIR/gunicorn.ctl when
        that directory exists, else $HOME/.gunicorn/gunicorn.ctl, both from its environment."""
        env = self.environment()
        runtime = env.get('XDG_RUNTIME_DIR')
        if runtime and os.path.isdir(runtime):
            return Path(runtime) / SOCKET_NAME
        return Path(env.get('HOME') or os.path.expanduser('~')) / '.gunicorn' / SOCKET_NAME

    @property
    def control_socket(self) -> Path | None:
        """Where this server binds its control socket, from its command line; None when it binds none."""
        release = tuple(int(part) for part in self.version.split('.')[:2])
        if release < (25, 1) or '--no-control-socket' in self.args:
            return None
        explicit = explicit_socket_path(self.args)
        return self.default_control_socket if explicit is None else self.tmp_path / explicit  # relative to its cwd

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def group_processes(self) -> list[psutil.Process]:
        """Every live process of this server's session (master, workers, upgraded masters, dirty processes)."""
        assert self.proc is not None
        found = []
        for p in psutil.process_iter(['pid']):
            try:
                if os.getpgid(p.pid) == self.proc.pid and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def titled(self, prefix: str) -> list[int]:
        """Pids in this server's session whose title starts with `prefix` (e.g. 'gunicorn: worker [')."""
        return sorted(p.pid for p in self.group_processes() if proc_title(p).startswith(prefix))

    def master_title_set(self) -> bool:
        return proc_title(psutil.Process(self.master_pid)).startswith('gunicorn: master [')

    def worker_pids(self, master: int | None = None) -> list[int]:
        """Workers of `master` (default: the first master), from the process table."""
        parent = self.master_pid if master is None else master
        try:
            children = psutil.Process(parent).children()
        except psutil.Error:
            return []
        pids = []
        for child in children:
            title = proc_title(child)
            if not self.setproctitle or title.startswith('gunicorn: worker ['):
                pids.append(child.pid)
        return sorted(pids)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # Traffic and signals

    def get(self, path: str = '/', timeout: float = 30.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)
        try:
            conn.request('GET', path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def hold(self, path: str, timeout: float = 60.0) -> threading.Thread:
        """Send a request in a background thread (for slow requests that hold a worker); join it to finish."""

        def run():
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.get(path, timeout=timeout)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def signal(self, sig: int, pid: int | None = None) -> None:
        os.kill(self.master_pid if pid is None else pid, sig)


def _listening_unix_paths() -> set[str]:
    """Paths of the listening Unix sockets in this process's network namespace: seen without connecting to them."""
    return {row.path for row in read_net_unix(ProcFS('/proc'), os.getpid()) if row.listening and row.path}


def _cpu_ns(pid: int) -> int:
    try:
        with open('/proc/%d/schedstat' % pid) as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_started_groups):
        _kill_group(pgid)


@contextlib.contextmanager
def running(tmp_path: Path, **kwargs) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path, **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()
