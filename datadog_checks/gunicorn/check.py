"""The Agent check: find the application's Gunicorn processes, classify them, and submit what was seen."""

from __future__ import annotations

from datadog_checks.base import AgentCheck

from .activity import CpuSampler
from .config_models import ConfigMixin
from .discovery import AppTree, Discovery
from .procfs import DEFAULT_ROOT, ProcessKey, ProcFS
from .resources import ResourceTracker, Usage
from .saturation import SaturationCollector, SaturationReport
from .version import VersionError, read_version

try:
    import datadog_agent
except ImportError:  # outside the Agent (tests, the command-line runner)
    from datadog_checks.base.stubs import datadog_agent


def procfs_root() -> str:
    """The proc root the Agent is configured with (`procfs_path`, e.g. /host/proc in a container)."""
    return (datadog_agent.get_config('procfs_path') or DEFAULT_ROOT).rstrip('/') or DEFAULT_ROOT


class GunicornCheck(AgentCheck, ConfigMixin):
    __NAMESPACE__ = 'gunicorn'
    SERVICE_CHECK = 'is_running'

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        self._version_for: ProcessKey | None = None
        self.check_initializations.append(self._configure)

    def _configure(self) -> None:
        self._app = self.config.proc_name
        self._tags = [*(self.config.tags or ()), 'app:%s' % self._app]
        # An instance setting wins over init_config; the model fills in a default, so look at what was written.
        self._gunicorn_cmd = self.instance.get('gunicorn') or self.shared_config.gunicorn or 'gunicorn'
        procfs = ProcFS(procfs_root())
        self._discovery = Discovery(procfs, self._app, self.log)
        self._sampler = CpuSampler(procfs, self.log)
        self._resources = ResourceTracker(procfs, self.log)
        self._saturation = SaturationCollector(procfs, self.log, self.config.bind or ())

    def check(self, _):
        trees = self._discovery.trees()
        if not trees:
            self._report_missing_master()
            return
        workers = {w.pid: w.num_threads for t in trees for w in t.workers}
        cpu, worker_cpu = self._sampler.count(workers, self.config.cpu_sample_interval, threads=workers)
        saturation = self._saturation.collect(trees, cpu)
        counts = saturation.workers
        self.log.debug(
            '%s: %d working and %d idle %s workers (CPU window: %d working; in flight: %s)',
            self._app,
            counts.working,
            counts.idle,
            saturation.model.value,
            cpu.working,
            saturation.in_flight,
        )
        if counts.total:
            self.service_check(self.SERVICE_CHECK, AgentCheck.OK, tags=self._tags)
        else:
            masters = ', '.join(str(t.master.pid) for t in trees)
            self.service_check(
                self.SERVICE_CHECK,
                AgentCheck.CRITICAL,
                tags=self._tags,
                message='0 working and 0 idle workers for %s: master %s has no workers' % (self._app, masters),
            )
        self.gauge('workers', counts.working, tags=[*self._tags, 'state:working'])
        self.gauge('workers', counts.idle, tags=[*self._tags, 'state:idle'])
        self._submit_saturation(saturation)
        self._submit_usage(self._resources.measure(trees, worker_cpu, self._sampler))
        self._collect_version(trees)

    def _submit_saturation(self, saturation: SaturationReport) -> None:
        for problem in saturation.problems:
            self.warning(problem)
        for listener in saturation.listeners:
            tags = [*self._tags, 'listener:%s' % listener.address]
            self.gauge('listen.queued', listener.queued, tags=tags)
            self._gauge_if_known('listen.backlog_max', listener.max_backlog, tags)
            self.gauge('connections.in_flight', listener.in_flight, tags=tags)

    def _submit_usage(self, usage: Usage) -> None:
        tags = self._tags
        self.gauge('masters', usage.masters, tags=tags)
        self._gauge_if_known('master.uptime', usage.master_uptime_seconds, tags)
        self._gauge_if_known('worker.age.min', usage.worker_age_min_seconds, tags)
        self._gauge_if_known('worker.age.max', usage.worker_age_max_seconds, tags)
        if usage.worker_exits is not None:
            self.count('workers.restarts', usage.worker_exits, tags=tags)
        for role in usage.roles:
            role_tags = [*tags, 'role:%s' % role.role]
            if role.role == 'dirty_worker':
                self.gauge('dirty_workers', role.processes, tags=tags)
            self.gauge('threads', role.threads, tags=role_tags)
            self.gauge('memory.rss', role.rss_bytes, tags=role_tags)
            self.gauge('memory.rss.max', role.rss_bytes_max, tags=role_tags)
            self._gauge_if_known('memory.pss', role.pss_bytes, role_tags)
            self._gauge_if_known('memory.pss.max', role.pss_bytes_max, role_tags)
            self._gauge_if_known('cpu.utilization', role.cpu_pct, role_tags)
            self._gauge_if_known('cpu.run_queue_wait', role.run_queue_wait_pct, role_tags)

    def _gauge_if_known(self, name: str, value: float | None, tags: list[str]) -> None:
        if value is not None:
            self.gauge(name, value, tags=tags)

    def _report_missing_master(self) -> None:
        message = (
            'No gunicorn process with name %s found, skipping worker metrics: no process is titled '
            '`gunicorn: master [%s]`. Is the application running, and is `setproctitle` installed in its '
            'Python environment (pip install setproctitle, then restart Gunicorn)?' % (self._app, self._app)
        )
        if self._discovery.denied:
            message += ' %d processes could not be read by the Agent user.' % self._discovery.denied
        self.service_check(self.SERVICE_CHECK, AgentCheck.CRITICAL, tags=self._tags, message=message)
        self.warning(message)

    @AgentCheck.metadata_entrypoint
    def _collect_version(self, trees: list[AppTree]) -> None:
        # `gunicorn --version` starts a Python interpreter (~100 ms): run it once per master, not once per run.
        master = min(trees, key=lambda t: t.master.pid).master.key
        if master == self._version_for:
            return
        self._version_for = master
        try:
            version = read_version(self._gunicorn_cmd)
        except VersionError as exc:
            self.log.debug('Cannot read the Gunicorn version: %s', exc)
            return
        self.set_metadata('version', version)
