"""What the saturation signals cost: each way of reading them, and the check's steady-state run with and without them.

    python scripts/saturation_bench.py              # 16 sync workers, 300 unrelated loopback connections
    python scripts/saturation_bench.py --workers 4 --connections 0 --runs 50

CPU is `time.process_time()` around the call (this process's user and kernel time: /proc and netlink reads are
mostly kernel time), median and p10-p90 over many calls. The unrelated connections matter: every read of
/proc/net/tcp and every inet_diag dump walks the whole established hash table, and /proc prints every socket.
Figures are printed, never asserted: the machine is shared and they are noisy. Needs the test virtualenv; every
process it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datadog_checks.base.stubs import aggregator  # noqa: E402
from datadog_checks.gunicorn import GunicornCheck  # noqa: E402
from datadog_checks.gunicorn.collectors.saturation import SaturationReport  # noqa: E402
from datadog_checks.gunicorn.collectors.working import WorkerModel  # noqa: E402
from datadog_checks.gunicorn.sources.procfs import ProcFS  # noqa: E402
from datadog_checks.gunicorn.sources.sockets import netlink  # noqa: E402
from datadog_checks.gunicorn.sources.sockets.proc_net import (  # noqa: E402
    read_net_tcp,
    read_net_tcp_listening,
    read_net_unix,
)
from datadog_checks.gunicorn.sources.sockets.rows import TCP_LISTEN  # noqa: E402
from tests.gunicorn_env import Gunicorn  # noqa: E402

PROCFS = ProcFS('/proc')

# Holds N established loopback connections (2N sockets) until its stdin closes.
_CONNECTIONS = r"""
import socket, sys
server = socket.socket()
server.bind(('127.0.0.1', 0))
server.listen(1024)
held = []
for _ in range(int(sys.argv[1])):
    client = socket.create_connection(server.getsockname())
    held += [client, server.accept()[0]]
print('ready', flush=True)
sys.stdin.read()
"""


def cpu_us(fn: Callable[[], object], runs: int) -> tuple[float, float, float]:
    """Median, p10 and p90 of the CPU microseconds of one call."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        samples.append((time.process_time() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[len(samples) // 10], samples[len(samples) * 9 // 10]


def show(label: str, figures: tuple[float, float, float]) -> None:
    print('  %-76s %8.0f us  (p10 %.0f, p90 %.0f)' % (label, *figures))


def reading_methods(server: Gunicorn, unix_path: str, runs: int) -> None:
    pid, port = server.master_pid, server.port
    worker = server.worker_pids()[0]
    print('Reading methods (one call each):')
    show('inet_diag dump, IPv4, port bytecode (queue+capacity+conns)', cpu_us(
        lambda: netlink.tcp_sockets(socket.AF_INET, [port]), runs))  # fmt: skip
    show('inet_diag dump, LISTEN only', cpu_us(
        lambda: netlink.tcp_sockets(socket.AF_INET, [port], states=[TCP_LISTEN]), runs))  # fmt: skip
    show('/proc/MASTER/net/tcp, whole', cpu_us(
        lambda: read_net_tcp(PROCFS, pid, local_ports={port}, families=[socket.AF_INET]), runs))  # fmt: skip
    show('/proc/MASTER/net/tcp6, whole', cpu_us(
        lambda: read_net_tcp(PROCFS, pid, local_ports={port}, families=[socket.AF_INET6]), runs))  # fmt: skip
    show('/proc/MASTER/net/tcp, up to the first non-LISTEN row', cpu_us(
        lambda: read_net_tcp_listening(PROCFS, pid, families=[socket.AF_INET]), runs))  # fmt: skip
    show('/proc/MASTER/net/unix, whole', cpu_us(lambda: read_net_unix(PROCFS, pid), runs))
    show('unix_diag dump of listeners (capacity)', cpu_us(netlink.unix_backlogs, runs))
    show('/proc/WORKER/fd links (one sync worker)', cpu_us(lambda: PROCFS.read_fd_links(worker), runs))
    show('shares_network_namespace (ns/net stat)', cpu_us(lambda: PROCFS.shares_network_namespace(pid), runs))
    del unix_path


def check_runs(label: str, instance: dict, runs: int, *, saturation: bool = True, other_namespace: bool = False):
    check = GunicornCheck('gunicorn', {}, [instance])
    check.run()  # loads the configuration and finds the master
    (collector,) = check._saturation.values()  # one tag set: no containers here
    if other_namespace:
        # As if the master ran in another network namespace: its TCP tables then come from /proc/MASTER/net.
        collector.tables._shares_namespace = lambda master: False
    spent: list[float] = []  # per run: prepare() and collect() together (the check calls both)

    def timed(method: Callable, starts_run: bool) -> Callable:
        def call(*a, **kw):
            start = time.process_time()
            try:
                return method(*a, **kw)
            finally:
                took = (time.process_time() - start) * 1e6
                if starts_run:
                    spent.append(took)
                else:
                    spent[-1] += took

        return call

    if saturation:
        collector.prepare = timed(collector.prepare, starts_run=True)
        collector.collect = timed(collector.collect, starts_run=False)
    else:

        def no_saturation(trees, cpu, *args, **kwargs):
            return SaturationReport((), cpu, WorkerModel.SYNC, None)

        collector.prepare = lambda *args, **kwargs: None
        collector.collect = no_saturation
    for _ in range(5):
        check.run()

    def run():
        aggregator.reset()
        error = check.run()
        if error:
            raise SystemExit('the check failed: %s' % error)

    figures = cpu_us(run, runs)
    if saturation:
        label += ' [prepare() and collect(): %.0f us]' % statistics.median(spent)
    show(label, figures)
    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workers', type=int, default=16)
    parser.add_argument('--connections', type=int, default=300, help='unrelated loopback connections held open')
    parser.add_argument('--runs', type=int, default=200, help='calls per figure')
    args = parser.parse_args()

    holder = subprocess.Popen(
        [sys.executable, '-c', _CONNECTIONS, str(args.connections)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    servers = []
    try:
        assert holder.stdout is not None
        if holder.stdout.readline() != b'ready\n':
            raise SystemExit('the connection holder failed')
        tmp = Path(tempfile.mkdtemp(prefix='saturation-bench-'))
        tcp = Gunicorn(tmp / 'tcp', workers=args.workers)
        unix_path = str(tmp / 'app.sock')
        unix = Gunicorn(tmp / 'unix', workers=args.workers, bind='unix:%s' % unix_path)
        servers = [tcp.start(), unix.start()]
        print(
            '%d sync workers, %d unrelated loopback connections, %d CPUs, kernel %s, pid %d (uid %d)\n'
            % (args.workers, args.connections, os.cpu_count(), os.uname().release, os.getpid(), os.geteuid())
        )
        reading_methods(tcp, unix_path, args.runs)

        # The sample window sleeps: CPU time does not count it, but a short one keeps the benchmark short.
        # The version is read once per master, at the first run (check_runs' warm-up), from its installation.
        base = {'cpu_sample_interval': 0.01}
        print('\nThe check, steady state (one run, CPU):')
        check_runs('TCP bind, without saturation collection', {**base, 'proc_name': tcp.name}, args.runs,
                   saturation=False)  # fmt: skip
        check_runs('TCP bind, listeners from the sockets (root), inet_diag', {**base, 'proc_name': tcp.name}, args.runs)
        check_runs('TCP bind, `bind` option, inet_diag', {**base, 'proc_name': tcp.name, 'bind': [tcp.bind]}, args.runs)
        check_runs('TCP bind, master in another namespace: /proc/PID/net/tcp', {**base, 'proc_name': tcp.name},
                   args.runs, other_namespace=True)  # fmt: skip
        check_runs('unix bind, without saturation collection', {**base, 'proc_name': unix.name}, args.runs,
                   saturation=False)  # fmt: skip
        check_runs('unix bind, listeners from the sockets (root)', {**base, 'proc_name': unix.name}, args.runs)
    finally:
        for server in servers:
            server.stop()
        if holder.stdin:
            holder.stdin.close()
        holder.wait(timeout=30)
    return 0


if __name__ == '__main__':
    sys.exit(main())
