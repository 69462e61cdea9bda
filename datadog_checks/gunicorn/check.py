"""The Agent check: find the application's Gunicorn processes, classify them, and submit what was seen."""

from __future__ import annotations

from datadog_checks.base import AgentCheck

from .activity import CpuSampler
from .config_models import ConfigMixin
from .containers import ContainerTags, conflicts
from .diagnose import explain_missing, hidepid_option
from .discovery import AppTree, Discovery
from .procfs import DEFAULT_ROOT, ProcessKey, ProcFS
from .resources import ResourceTracker, Usage
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
        self._untitled_reported = False
        self._last_app: str | None = None
        self.check_initializations.append(self._configure)

    def _configure(self) -> None:
        self._app = self.config.proc_name
        self._pid_file = self.config.pid_file
        self._instance_tags = list(self.config.tags or ())
        # An instance setting wins over init_config; the model fills in a default, so look at what was written.
        self._gunicorn_cmd = self.instance.get('gunicorn') or self.shared_config.gunicorn or 'gunicorn'
        self._procfs = ProcFS(procfs_root())
        self._discovery = Discovery(self._procfs, self._app, self.log, pid_file=self._pid_file)
        self._containers = ContainerTags(self._procfs, self.log)
        self._sampler = CpuSampler(self._procfs, self.log)
        # Worker churn and CPU deltas are followed per tag set: each container's masters keep their own history.
        self._resources: dict[tuple[str, ...], ResourceTracker] = {}

    def check(self, _):
        trees = self._discovery.trees()
        groups: dict[tuple[str, ...], list[AppTree]] = {}
        for tree in trees:
            container_tags = self._containers.tags(tree.master.key)
            in_container = self._containers.container_id(tree.master.key) is not None
            if conflicts(self._instance_tags, container_tags, in_container):
                continue  # another container's Autodiscovery instance reports this master
            groups.setdefault(self._tags(tree, container_tags), []).append(tree)
        self._containers.forget_except(t.master.key for t in trees)
        self._report_discovery(trees)
        if not groups:
            self._report_missing_master()
            return
        workers = {tags: [w.pid for t in group for w in t.workers] for tags, group in groups.items()}
        all_counts, worker_cpu = self._sampler.count_groups(workers, self.config.cpu_sample_interval)
        for tags, counts in all_counts.items():
            self.log.debug('%s: %d working and %d idle workers', tags, counts.working, counts.idle)
            if counts.total:
                self.service_check(self.SERVICE_CHECK, AgentCheck.OK, tags=list(tags))
            else:
                message = _no_workers(self._app or groups[tags][0].app, groups[tags])
                self.service_check(self.SERVICE_CHECK, AgentCheck.CRITICAL, tags=list(tags), message=message)
            self.gauge('workers', counts.working, tags=[*tags, 'state:working'])
            self.gauge('workers', counts.idle, tags=[*tags, 'state:idle'])
            tracker = self._resources.setdefault(tags, ResourceTracker(self._procfs, self.log))
            cpu = {pid: worker_cpu[pid] for pid in workers[tags] if pid in worker_cpu}
            self._submit_usage(list(tags), tracker.measure(groups[tags], cpu, self._sampler))
        self._resources = {tags: tracker for tags, tracker in self._resources.items() if tags in groups}
        self._collect_version(trees)

    def _tags(self, tree: AppTree, container_tags: tuple[str, ...]) -> tuple[str, ...]:
        self._last_app = self._app or tree.app or self._last_app
        return tuple(dict.fromkeys([*self._instance_tags, 'app:%s' % (self._app or tree.app), *container_tags]))

    def _report_discovery(self, trees: list[AppTree]) -> None:
        problem = self._discovery.pid_file_problem
        if problem is not None and trees:
            self.warning('%s; the master was found by proc_name %s instead', problem, self._app)
        untitled = [t for t in trees if t.titles_missing]
        if untitled and not self._untitled_reported:
            self.warning(
                'Gunicorn master %s of %s runs without process titles: the check found it from its command line. '
                "Install setproctitle in the application's Python environment (pip install setproctitle, then "
                'restart Gunicorn) to make discovery cheaper and exact.',
                ', '.join(str(t.master.pid) for t in untitled),
                self._app or untitled[0].app,
            )
        self._untitled_reported = bool(untitled) or (self._untitled_reported and not trees)

    def _submit_usage(self, tags: list[str], usage: Usage) -> None:
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
        message = explain_missing(
            self._app,
            self._discovery.sightings if self._app else None,
            self._pid_file,
            self._discovery.pid_file_problem,
            hidepid_option(self._procfs),
        )
        app = self._app or self._last_app  # with only a pid file, the name seen last (none before a first success)
        tags = [*self._instance_tags, *(['app:%s' % app] if app else [])]
        self.service_check(self.SERVICE_CHECK, AgentCheck.CRITICAL, tags=tags, message=message)
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


def _no_workers(app: str | None, trees: list[AppTree]) -> str:
    masters = ', '.join(str(t.master.pid) for t in trees)
    if all(t.starting for t in trees):
        return (
            '0 working and 0 idle workers for %s: master %s is still starting (it shows its command line and has '
            'no workers yet, as while `--preload` imports the application)' % (app, masters)
        )
    return '0 working and 0 idle workers for %s: master %s has no workers' % (app, masters)
