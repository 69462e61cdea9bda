"""Chaos soak: the check running every 100 ms in this process while a driver keeps breaking real Gunicorn servers.

For each worker class (sync and gthread) a driver takes a fixed number of steps, each one fault followed by a wait
until the server has settled: SIGKILL a random worker, TTIN, TTOU, HUP, a USR2 upgrade whose old master is retired
with TERM (WINCH works only for daemonized masters), SIGKILL the master and start it again, and slow requests that
hold workers. Throughout, a thread runs `check.run()` every 100 ms and keeps every result and every submission.

Asserted: no run raises or returns an error; after each step settles, the first run that starts afterwards reports
as many workers as the process table holds (counted here with psutil, from titles and parents, never with the
check's code); `gunicorn.is_running` is CRITICAL on the first run after the master's death and OK on the first run
after its return; no metric is negative, workers never outnumber the processes of the servers' sessions, CPU never
exceeds every CPU of the machine; the process ends with no more threads or file descriptors than it started with.

Bounded: a fixed step count and a wall-clock cap, loopback only, every process stopped at the end even on failure.
Runs with `pytest --soak` (`tox -e bench`); GUNICORN_SOAK_STEPS (per worker class), GUNICORN_SOAK_SECONDS (the cap)
and GUNICORN_SOAK_SEED change its size and its sequence.
"""

from __future__ import annotations

import collections
import gc
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from datadog_checks.base import AgentCheck
from datadog_checks.base.stubs import aggregator as stub_aggregator
from datadog_checks.gunicorn import GunicornCheck

from .common import TimeoutExpired, wait_for
from .gunicorn_env import NEWEST, Gunicorn, proc_title

pytestmark = pytest.mark.soak

STEPS = int(os.environ.get('GUNICORN_SOAK_STEPS', '30'))
CAP_SECONDS = float(os.environ.get('GUNICORN_SOAK_SECONDS', '120'))
SEED = int(os.environ.get('GUNICORN_SOAK_SEED', '20261124'))
PERIOD_SECONDS = 0.1
WINDOW_SECONDS = 0.05  # the check's sample window: a run takes about half of its 100 ms period
WORKERS = 3
MAX_WORKERS = 5
SETTLE_SECONDS = 40.0
# A short worker timeout makes orphaned sync workers notice their master's death within timeout/2 s; a short
# graceful timeout bounds how long a HUP, TTOU or retired master waits for workers held by slow requests.
SERVER_ARGS = ['--timeout', '8', '--graceful-timeout', '2']
CLASSES = {'sync': [], 'gthread': ['--worker-class', 'gthread', '--threads', '4']}
FAULTS = ('kill_worker', 'ttin', 'ttou', 'hup', 'usr2', 'kill_master', 'slow_requests')
NCPU = os.cpu_count() or 1
MEM_TOTAL = psutil.virtual_memory().total


# The process table, read independently of the check


def session_pids(sessions: set[int]) -> set[int]:
    """Live (non-zombie) pids whose process group is one of `sessions`: a raw /proc scan, cheap enough per run."""
    found = set()
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name, 'rb') as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b')') + 2 :].split()
        if fields[0] != b'Z' and int(fields[2]) in sessions:
            found.add(int(name))
    return found


@dataclass
class Truth:
    masters: dict[int, str]  # live masters of the application: pid -> title
    workers: frozenset[int]  # live workers whose parent is one of those masters
    orphans: frozenset[int]  # live processes titled as workers whose master is gone
    processes: int  # every live process of the sessions

    @property
    def count(self) -> int:
        return len(self.workers)


def truth(sessions: set[int], name: str) -> Truth:
    titles = (' [%s]' % name, ' [%s.2]' % name)
    masters, workers, parents = {}, set(), {}
    pids = session_pids(sessions)
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            title, ppid = proc_title(proc), proc.ppid()
        except psutil.Error:
            continue
        if title.startswith('gunicorn: master') and title.endswith(titles):
            masters[pid] = title
        elif title.startswith('gunicorn: worker') and title.endswith(titles):
            workers.add(pid)
            parents[pid] = ppid
    live = {w for w in workers if parents[w] in masters}
    return Truth(masters, frozenset(live), frozenset(workers - live), len(pids))


# The check, in a thread of this process


@dataclass
class Run:
    started: float
    ended: float
    error: str | None
    workers: int | None  # working + idle, None when the run sent no worker gauges
    status: int | None  # gunicorn.is_running
    metrics: list[tuple[str, float, tuple[str, ...]]]
    warnings: list[str]
    bound: int  # processes of the sessions seen just before or just after the run


class CheckLoop(threading.Thread):
    """`check.run()` every `PERIOD_SECONDS`, start to start, recording everything; problems go to `problems`."""

    def __init__(self, check: GunicornCheck, sessions: set[int]):
        super().__init__(name='soak-check-loop', daemon=True)
        self.check = check
        self.sessions = sessions  # replaced, never mutated, by the driver
        self.runs: list[Run] = []
        self.problems: list[str] = []
        self.stopping = threading.Event()
        self.ran = threading.Condition()

    def run(self) -> None:
        next_start = time.monotonic()
        while not self.stopping.is_set():
            before = session_pids(self.sessions)
            stub_aggregator.reset()
            started = time.monotonic()
            try:
                error = self.check.run() or None
            except BaseException as exc:  # a run must never raise: record whatever escapes
                error = 'raised %r' % exc
            ended = time.monotonic()
            after = session_pids(self.sessions)
            run = self._record(started, ended, error, len(before | after))
            with self.ran:
                self.runs.append(run)
                self.ran.notify_all()
            next_start = max(next_start + PERIOD_SECONDS, time.monotonic())
            self.stopping.wait(next_start - time.monotonic())

    def _record(self, started: float, ended: float, error: str | None, bound: int) -> Run:
        metrics = [(m.name, m.value, tuple(m.tags)) for ms in stub_aggregator._metrics.values() for m in ms]
        states = {
            next(t for t in tags if t.startswith('state:')): value
            for name, value, tags in metrics
            if name == 'gunicorn.workers'
        }
        checks = stub_aggregator.service_checks('gunicorn.is_running')
        run = Run(
            started,
            ended,
            error,
            int(sum(states.values())) if states else None,
            checks[-1].status if checks else None,
            metrics,
            list(self.check.get_warnings()),  # what the Agent does after every run
            bound,
        )
        where = 'run %d' % len(self.runs)
        if error:
            self.problems.append('%s returned an error: %s' % (where, error[:500]))
        if len(checks) != 1:
            self.problems.append('%s sent %d is_running service checks' % (where, len(checks)))
        for name, value, tags in metrics:
            if not math.isfinite(value) or value < 0:
                self.problems.append('%s sent %s = %r %s' % (where, name, value, list(tags)))
        if run.workers is not None and run.workers > bound:
            self.problems.append('%s saw %d workers in sessions of %d processes' % (where, run.workers, bound))
        for name, value, tags in metrics:
            if name == 'gunicorn.cpu.utilization' and value > 110 * NCPU:
                self.problems.append('%s sent %s = %.0f%% on %d CPUs %s' % (where, name, value, NCPU, list(tags)))
            if name.startswith('gunicorn.memory.') and value > MEM_TOTAL:
                self.problems.append('%s sent %s = %d bytes, more than the machine has' % (where, name, value))
            if name == 'gunicorn.masters' and value > bound:
                self.problems.append('%s saw %d masters in sessions of %d processes' % (where, value, bound))
        return run

    def first_run_after(self, moment: float, timeout: float = 20.0) -> Run:
        """The first run that started after `moment` (time.monotonic()), once it has ended."""
        deadline = time.monotonic() + timeout
        with self.ran:
            while True:
                found = next((r for r in self.runs if r.started > moment), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_alive():
                    raise TimeoutExpired('no check run started after the step within %.0f s' % timeout)
                self.ran.wait(remaining)


# The driver


@dataclass
class Stats:
    steps: collections.Counter = field(default_factory=collections.Counter)
    faults: collections.Counter = field(default_factory=collections.Counter)
    comparisons: int = 0
    failures: list[str] = field(default_factory=list)
    capped: bool = False


class Chaos:
    """One application's servers, one incarnation at a time (a master killed and started again is a new one)."""

    def __init__(self, tmp: Path, worker_class: str, rng: random.Random, stats: Stats):
        self.tmp = tmp
        self.worker_class = worker_class
        self.rng = rng
        self.stats = stats
        self.name = 'soak-%s-%d' % (worker_class, rng.randrange(10**6))
        self.socket = str(tmp / 'app.ctl')
        self.servers: list[Gunicorn] = []
        self.master = 0  # the current master: changes with USR2 and restarts
        self.holds: list[threading.Thread] = []
        self.loop: CheckLoop | None = None

    # Servers

    def start_server(self) -> Gunicorn:
        args = [*SERVER_ARGS, '--control-socket', self.socket, *CLASSES[self.worker_class]]
        server = Gunicorn(
            self.tmp / ('incarnation%d' % len(self.servers)), version=NEWEST, name=self.name, workers=WORKERS, args=args
        )
        self.servers.append(server)
        server.start(wait=False)
        # At once, before the server is ready: a run that finds the new master must count its session's processes.
        if self.loop is not None:
            self.loop.sessions = self.sessions()
        server.wait_ready(timeout=SETTLE_SECONDS)
        self.master = server.master_pid
        return server

    def sessions(self) -> set[int]:
        return {s.master_pid for s in self.servers if s.proc is not None}

    def stop(self) -> None:
        # The first master of each incarnation is never reaped before this point, so its pid (the session's id)
        # cannot have been reused, and the harness's stop() may signal it and its group safely.
        for thread in self.holds:
            thread.join(15)
        for server in reversed(self.servers):
            server.stop()

    def now(self) -> Truth:
        return truth(self.sessions(), self.name)

    # Steps

    def step(self, fault: str) -> None:
        self.stats.steps[fault] += 1
        getattr(self, fault)()

    def kill_worker(self) -> None:
        before = self.now()
        victim = self.rng.choice(sorted(before.workers))
        os.kill(victim, signal.SIGKILL)
        self.stats.faults['SIGKILL worker'] += 1
        self.settle(lambda t: victim not in t.workers and t.count == before.count, 'a new worker for %d' % victim)
        self.compare('kill_worker')

    def ttin(self) -> None:
        expected = self.now().count + 1
        os.kill(self.master, signal.SIGTTIN)
        self.stats.faults['TTIN'] += 1
        self.settle(lambda t: t.count == expected, '%d workers after TTIN' % expected)
        self.compare('ttin')

    def ttou(self) -> None:
        expected = self.now().count - 1
        os.kill(self.master, signal.SIGTTOU)
        self.stats.faults['TTOU'] += 1
        self.settle(lambda t: t.count == expected, '%d workers after TTOU' % expected)
        self.compare('ttou')

    def hup(self) -> None:
        old = self.now().workers
        os.kill(self.master, signal.SIGHUP)
        self.stats.faults['HUP'] += 1
        # HUP reloads the configuration: the command line's worker count comes back, whatever TTIN/TTOU did.
        self.settle(lambda t: not (old & t.workers) and t.count == WORKERS, 'every worker replaced after HUP')
        self.compare('hup')

    def usr2(self) -> None:
        old_master, old = self.master, self.now()
        os.kill(old_master, signal.SIGUSR2)
        self.stats.faults['USR2'] += 1

        def upgraded(t: Truth) -> bool:
            new = [p for p, title in t.masters.items() if p != old_master and title.endswith('.2]')]
            return bool(new) and t.count == old.count + WORKERS

        self.settle(upgraded, 'the new master [%s.2] and its workers' % self.name)
        new_master = next(p for p, title in self.now().masters.items() if p != old_master)
        self.compare('usr2: both masters')
        os.kill(old_master, signal.SIGTERM)
        self.stats.faults['TERM old master'] += 1
        self.master = new_master

        def promoted(t: Truth) -> bool:
            return list(t.masters) == [new_master] and t.masters[new_master].endswith('[%s]' % self.name)

        self.settle(
            lambda t: promoted(t) and not (old.workers & t.workers) and t.count == WORKERS and not t.orphans,
            'the old master retired and the new one promoted',
        )
        self.compare('usr2: promoted')

    def kill_master(self) -> None:
        assert self.loop is not None
        os.kill(self.master, signal.SIGKILL)
        self.stats.faults['SIGKILL master'] += 1
        wait_for(lambda: self.master not in self.now().masters, SETTLE_SECONDS, 'the master to die')
        dead_at = time.monotonic()
        run = self.loop.first_run_after(dead_at)
        if run.status != AgentCheck.CRITICAL:
            self.fail('kill_master: the first run after the death reported is_running %s' % run.status)
        # Orphaned workers notice within timeout/2 s; only then does the application come back.
        self.settle(lambda t: not t.masters and not t.workers and not t.orphans, 'the orphaned workers to exit')
        self.start_server()
        returned_at = time.monotonic()
        self.stats.faults['master restart'] += 1
        run = self.loop.first_run_after(returned_at)
        if run.status != AgentCheck.OK:
            self.fail('kill_master: the first run after the restart reported is_running %s' % run.status)
        self.compare('kill_master: restarted')

    def slow_requests(self) -> None:
        server = self.servers[-1]
        count = self.now().count
        # Some requests wait on I/O, one burns CPU: busy and working workers for the check to see.
        for _ in range(max(1, count - 1)):
            self.holds.append(server.hold('/sleep/1.5', timeout=10))
        self.holds.append(server.hold('/burn/0.5', timeout=10))
        self.stats.faults['slow requests'] += count
        self.compare('slow_requests')

    # Settling and comparing

    def settle(self, predicate, what: str) -> None:
        try:
            wait_for(lambda: predicate(self.now()), SETTLE_SECONDS, what, interval=0.05)
        except TimeoutExpired as exc:
            self.fail('%s (truth: %s)' % (exc, self.now()))
            raise

    def compare(self, label: str) -> None:
        """The first run that starts after now must count the workers the process table holds."""
        assert self.loop is not None
        for _ in range(5):
            before = self.now()
            run = self.loop.first_run_after(time.monotonic())
            after = self.now()
            if before.workers != after.workers:
                continue  # the server moved during the run (a worker timed out, a held request ended a worker)
            self.stats.comparisons += 1
            if run.workers != after.count:
                self.fail('%s: the check saw %s workers where %d run %s' % (label, run.workers, after.count, after))
            return
        self.fail('%s: the process table never held still for a whole run' % label)

    def fail(self, message: str) -> None:
        self.stats.failures.append('[%s] %s' % (self.worker_class, message))

    def plan(self, steps: int) -> list[str]:
        """Every fault once, in a random order, then random faults; each feasible when its turn comes."""
        first = list(FAULTS)
        self.rng.shuffle(first)
        return first + [self.rng.choice(FAULTS) for _ in range(max(0, steps - len(first)))]

    def feasible(self, fault: str) -> str:
        count = self.now().count
        if fault == 'ttin' and count >= MAX_WORKERS:
            return 'ttou'
        if fault == 'ttou' and count <= 1:
            return 'ttin'
        return fault


def open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def threads() -> int:
    return len(os.listdir('/proc/self/task'))


def test_chaos_soak(tmp_path, capsys):
    started = time.monotonic()
    deadline = started + CAP_SECONDS
    fds_before, threads_before = open_fds(), threads()
    rng = random.Random(SEED)
    stats = Stats()
    runs: list[Run] = []
    problems: list[str] = []
    for index, worker_class in enumerate(CLASSES):
        chaos = Chaos(tmp_path / worker_class, worker_class, rng, stats)
        check = None
        loop = None
        try:
            chaos.start_server()
            instance = {
                'proc_name': chaos.name,
                'cpu_sample_interval': WINDOW_SECONDS,
                'control_socket': chaos.socket,
                'gunicorn': str(chaos.servers[0].venv / 'bin' / 'gunicorn'),
            }
            check = GunicornCheck('gunicorn', {}, [instance])
            check.check_id = 'gunicorn:soak'
            loop = chaos.loop = CheckLoop(check, chaos.sessions())
            loop.start()
            chaos.compare('start')
            # Each worker class gets its share of what is left of the cap.
            class_deadline = time.monotonic() + (deadline - time.monotonic()) / (len(CLASSES) - index)
            for fault in chaos.plan(STEPS):
                if time.monotonic() > class_deadline:
                    stats.capped = True
                    break
                chaos.step(chaos.feasible(fault))
        except TimeoutExpired:
            pass  # already recorded as a failure by settle(); stop this class, clean up, report
        finally:
            if loop is not None:
                loop.stopping.set()
                loop.join(30)
                runs.extend(loop.runs)
                problems.extend(loop.problems)
                if loop.is_alive():
                    problems.append('[%s] the check loop did not stop' % worker_class)
            chaos.stop()
            if check is not None:
                check.cancel()  # what the Agent does when it unschedules an instance
            chaos.loop = None
            del check, loop
    gc.collect()
    fds_after, threads_after = open_fds(), threads()
    if fds_after > fds_before:
        problems.append('%d file descriptors open at the end, %d at the start' % (fds_after, fds_before))
    if threads_after > threads_before:
        problems.append('%d threads at the end, %d at the start' % (threads_after, threads_before))
    failures = stats.failures + problems

    durations = sorted(r.ended - r.started for r in runs)
    criticals = sum(1 for r in runs if r.status == AgentCheck.CRITICAL)
    warnings = sum(len(r.warnings) for r in runs)
    with capsys.disabled():
        print(
            '\nchaos soak: seed %d, %d steps (%s), %d check runs (%d CRITICAL, %d warnings), run time median %.0f ms '
            'max %.0f ms, faults injected: %s; %d counts compared with the process table; %s; %.0f s%s; '
            'fds %d -> %d, threads %d -> %d; %d failures'
            % (
                SEED,
                sum(stats.steps.values()),
                ', '.join('%s %d' % kv for kv in sorted(stats.steps.items())),
                len(runs),
                criticals,
                warnings,
                durations[len(durations) // 2] * 1e3 if durations else 0,
                durations[-1] * 1e3 if durations else 0,
                ', '.join('%s %d' % kv for kv in sorted(stats.faults.items())),
                stats.comparisons,
                'sync and gthread',
                time.monotonic() - started,
                ' (capped at %.0f s)' % CAP_SECONDS if stats.capped else '',
                fds_before,
                fds_after,
                threads_before,
                threads_after,
                len(failures),
            )
        )
        for failure in failures[:20]:
            print('  FAILURE: %s' % failure)
    assert not failures, '\n'.join(failures[:20])
    assert runs, 'the check never ran'
