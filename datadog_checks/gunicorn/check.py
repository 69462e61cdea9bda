"""The Agent check: find the application's Gunicorn processes, classify them, and submit what was seen."""

from __future__ import annotations

from datadog_checks.base import AgentCheck, ConfigurationError

from .base_compat import adapt_config_models
from .collectors.app_discovery import AppDiscovery, AppSelection
from .collectors.containers import ContainerTags, group_by_tags
from .collectors.cpu import CpuSampler
from .collectors.discovery import AppTree, Discovery
from .collectors.resources import ResourceTracker, Usage
from .collectors.saturation import SaturationCollector, SaturationReport, control_socket_hints
from .collectors.version import VersionReader
from .collectors.working import WorkerCounts
from .config_models import ConfigMixin
from .configuration import Reads, one_line_error, procfs_root, unknown_options
from .messages import (
    apps_left_out_message,
    bounded,
    control_socket_problem,
    explain_missing,
    no_workers_message,
    process_table_unreadable_message,
    titles_missing_message,
    version_unknown_message,
)
from .sources.control_socket.client import ControlSocketError
from .sources.control_socket.monitor import ControlSocketMonitor, Health
from .sources.procfs import ProcessKey, ProcFS, held_files_limit
from .sources.redaction import app_name
from .sources.sockets.shared_dump import SharedTcpDump

# Before any instance loads its models: on an Agent older than 7.78.0 they must run as that Agent runs every check's.
adapt_config_models()


class GunicornCheck(AgentCheck, ConfigMixin):
    __NAMESPACE__ = 'gunicorn'
    SERVICE_CHECK = 'is_running'

    def __init__(self, name, init_config, instances):
        try:
            super().__init__(name, init_config, instances)
        except ConfigurationError as exc:  # the base refuses a metric_patterns of the wrong shape here
            raise ConfigurationError(one_line_error(str(exc), (instances or [{}])[0])) from None
        self._config_warnings: list[str] = []
        self._untitled_reported: set[str] = set()  # apps warned about missing titles (one key in single-app mode)
        self._last_app: str | None = None  # with only a pid file, the name the master was last seen with
        self.check_initializations.append(self._configure)

    def load_configuration_models(self, package_path=None):
        try:
            super().load_configuration_models(package_path)
        except ConfigurationError as exc:
            raise ConfigurationError(one_line_error(str(exc), self.instance or {})) from None
        # Said on every run: `datadog-agent status` shows the warnings of the last run only.
        self._config_warnings = [
            *unknown_options('init_config', self.init_config or {}, type(self.shared_config).model_fields),
            *unknown_options('this instance', self.instance or {}, type(self.config).model_fields),
        ]

    def _configure(self) -> None:
        # A name given as a factory call is matched and tagged without its arguments, as titles are (redaction.py).
        self._app = app_name(self.config.proc_name)
        self._pid_file = self.config.pid_file
        self._instance_tags = list(self.config.tags or ())
        # An instance setting wins over init_config; the model fills in a default, so look at what was written.
        gunicorn = self.instance.get('gunicorn') or (self.init_config or {}).get('gunicorn')
        # The masters' and workers' stat and schedstat files stay open between runs (see ProcFS).
        self._procfs = procfs = ProcFS(procfs_root(), max_held=held_files_limit())
        autodiscovery = self.config.app_autodiscovery
        self._node_wide = bool(autodiscovery is not None and autodiscovery.enabled)
        if self._node_wide:
            selection = AppSelection.of(autodiscovery.include, autodiscovery.exclude, autodiscovery.max_apps)
            self._discovery = AppDiscovery(procfs, None, self.log, selection=selection)
        else:
            self._discovery = Discovery(procfs, self._app, self.log, pid_file=self._pid_file)
        self._version = VersionReader(procfs, self.log, gunicorn)
        self._containers = ContainerTags(procfs, self.log)
        self._sampler = CpuSampler(procfs, self.log)
        # Usage history (CPU deltas, worker churn) is kept per tag set: each container's masters have their own.
        self._resources: dict[tuple[str, ...], ResourceTracker] = {}
        self._saturation: dict[tuple[str, ...], SaturationCollector] = {}  # listeners and fd evidence, per tag set
        # One inet_diag dump per family per run for the masters of every tag set, and one netlink socket for them.
        self._tcp_dump = SharedTcpDump()
        self._control = ControlSocketMonitor(
            procfs, self.log, self.config.control_socket, self.config.control_socket_timeout
        )
        # metric_patterns is read once, when the check is made: what it excludes is never even read.
        self._reads = Reads.of(self.should_send_metric)

    def cancel(self):
        # The Agent unschedules this instance: close its held files now rather than whenever it is collected.
        if hasattr(self, '_procfs'):
            self._procfs.close()
            for collector in self._saturation.values():
                collector.close()
            self._tcp_dump.close()

    def check(self, _):
        for warning in self._config_warnings:
            self.warning(warning)
        self._procfs.release_unused()  # the files of processes the last run no longer looked at
        trees = self._discovery.trees()
        self._last_app = self._app or next((t.app for t in trees if t.app), self._last_app)
        groups = group_by_tags(trees, self._instance_tags, self._app, self._containers)
        self._report_discovery(trees)
        if not groups:
            # On a node-wide instance no application is not an outage: its apps moved or stopped.
            if not self._node_wide:
                self._report_missing_master()
            return
        # Before the sample window: no control connection may stay open while the check sleeps.
        every_tree = [t for group in groups.values() for t in group]
        health = self._read_health(every_tree) if self._reads.control_socket else []
        workers = {tags: [w.pid for t in group for w in t.workers] for tags, group in groups.items()}
        # A worker running several threads is sampled over all of them (gthread computes in its pool threads).
        threads = {w.pid: w.num_threads for group in groups.values() for t in group for w in t.workers}
        windows, worker_cpu = self._sampler.count_groups(workers, self.config.cpu_sample_interval, threads)
        masters = {tags: {t.master.key for t in group} for tags, group in groups.items()}
        healths = {tags: [(key, h) for key, h in health if key in masters[tags]] for tags in groups}
        saturations = self._read_saturation(groups, windows, healths)
        for tags, group in groups.items():
            tag_list = list(tags)
            group_health = healths[tags]
            saturation = saturations.get(tags)
            counts = saturation.workers if saturation is not None else windows[tags]
            if counts.total:
                self.service_check(self.SERVICE_CHECK, AgentCheck.OK, tags=tag_list)
            else:
                message = no_workers_message(self._app or group[0].app, group)
                self.service_check(self.SERVICE_CHECK, AgentCheck.CRITICAL, tags=tag_list, message=message)
            self.gauge('workers', counts.working, tags=[*tag_list, 'state:working'])
            self.gauge('workers', counts.idle, tags=[*tag_list, 'state:idle'])
            if saturation is not None:
                self._submit_saturation(tag_list, saturation)
            if self._reads.resources:
                tracker = self._resources.setdefault(tags, ResourceTracker(self._procfs, self.log, pss=self._reads.pss))
                cpu = {pid: worker_cpu[pid] for pid in workers[tags] if pid in worker_cpu}
                self._submit_usage(tag_list, tracker.measure(group, cpu, self._sampler))
            self._submit_health(tag_list, len(group), group_health)
        self._resources = {tags: tracker for tags, tracker in self._resources.items() if tags in groups}
        for tags in [t for t in self._saturation if t not in groups]:
            self._saturation.pop(tags).close()
        self._collect_version(trees)

    def _read_saturation(
        self,
        groups: dict[tuple[str, ...], list[AppTree]],
        windows: dict[tuple[str, ...], WorkerCounts],
        healths: dict[tuple[str, ...], list[tuple[ProcessKey, Health]]],
    ) -> dict[tuple[str, ...], SaturationReport]:
        """Each group's listeners and the worker split they complete; empty when no metric of theirs is sent.

        In two passes, so that the masters of every group in the Agent's network namespace share one inet_diag dump
        per family: every group's collector first names its listeners to the shared dump, then each collects.
        """
        if not self._reads.socket_tables:
            return {}
        self._tcp_dump.start_run()
        hints = {tags: control_socket_hints(healths[tags]) for tags in groups}
        for tags, group in groups.items():
            if tags not in self._saturation:
                self._saturation[tags] = SaturationCollector(
                    self._procfs, self.log, self.config.bind or (), self._tcp_dump
                )
            self._saturation[tags].prepare(group, hints[tags][0])
        return {
            tags: self._collect_saturation(tags, group, windows[tags], hints[tags]) for tags, group in groups.items()
        }

    def _collect_saturation(
        self,
        tags: tuple[str, ...],
        group: list[AppTree],
        window: WorkerCounts,
        hints: tuple[dict[int, list[str]], str | None, int | None],
    ) -> SaturationReport:
        saturation = self._saturation[tags].collect(group, window, *hints)
        self.log.debug(
            '%s: %d working and %d idle %s workers (CPU window: %d working; in flight: %s)',
            tags,
            saturation.workers.working,
            saturation.workers.idle,
            saturation.model.value,
            window.working,
            saturation.in_flight,
        )
        return saturation

    def _submit_saturation(self, tags: list[str], saturation: SaturationReport) -> None:
        for problem in saturation.problems:
            self.warning(bounded(problem))
        for listener in saturation.listeners:
            listener_tags = [*tags, 'listener:%s' % listener.address]
            self.gauge('listen.queued', listener.queued, tags=listener_tags)
            self._gauge_if_known('listen.backlog_max', listener.max_backlog, listener_tags)
            self.gauge('connections.in_flight', listener.in_flight, tags=listener_tags)

    def _report_discovery(self, trees: list[AppTree]) -> None:
        problem = self._discovery.pid_file_problem
        if problem is not None and trees:
            self.warning(bounded('%s; the master was found by proc_name %s instead' % (problem, self._app)))
        if isinstance(self._discovery, AppDiscovery):
            if self._discovery.left_out:
                self.warning(apps_left_out_message(self._discovery.left_out, self._discovery.selection.max_apps))
            if self._discovery.sightings.unreadable_root:
                self.warning(process_table_unreadable_message(self._discovery.sightings))
        # Once per application (single-app mode has one key); again only if its titles came back and went away.
        key = (lambda t: t.app or '') if self._node_wide else (lambda t: '')
        untitled: dict[str, list[AppTree]] = {}
        for tree in trees:
            if tree.titles_missing:
                untitled.setdefault(key(tree), []).append(tree)
        for app, app_trees in untitled.items():
            if app not in self._untitled_reported:
                self.warning(titles_missing_message(self._app or app_trees[0].app, app_trees))
        present = {key(t) for t in trees}
        self._untitled_reported = set(untitled) | {a for a in self._untitled_reported if a not in present}

    def _read_health(self, trees: list[AppTree]) -> list[tuple[ProcessKey, Health]]:
        found = []
        problems = []
        for tree in trees:
            try:
                health = self._control.read(tree.master, tree.upgrade_masters)
            except ControlSocketError as exc:
                problem = control_socket_problem(exc, tree, trees, configured=bool(self.config.control_socket))
                if problem is None:
                    self.log.debug('No control-socket metrics for master %s: %s', tree.master.pid, exc)
                else:
                    problems.append(problem)
                continue
            if health is not None:
                if health.upgrade_pid is not None:
                    self.log.debug(
                        'The control socket of master %s is answered by %s, the new master of a USR2 upgrade',
                        tree.master.pid,
                        health.upgrade_pid,
                    )
                found.append((tree.master.key, health))
        if problems:
            self.warning(bounded(' '.join(dict.fromkeys(problems))))
        self._control.forget_except({t.master.key for t in trees})
        return found

    def _submit_health(self, group_tags: list[str], masters: int, found: list[tuple[ProcessKey, Health]]) -> None:
        """Figures of every master of the group that answered: counts summed only when every master answered, since
        a sum over some of them means nothing; worst and average heartbeats over the workers whose masters did."""
        if not found:
            return
        worker_class = next((h.config.worker_class for _, h in found if h.config.worker_class), None)
        tags = [*group_tags, 'worker_class:%s' % worker_class] if worker_class else group_tags
        targets = [h.stats.workers_target for _, h in found if h.stats.workers_target is not None]
        if len(targets) == masters:  # found holds each master once: every one of them answered
            self.gauge('workers.target', sum(targets), tags=tags)
        churn = [c for key, h in found if (c := self._control.churn(key, h.stats)) is not None]
        if len(churn) == masters:
            self.count('workers.spawned', sum(c.spawned for c in churn), tags=tags)
            self.count('workers.killed', sum(c.killed for c in churn), tags=tags)
            self.count('reloads', sum(c.reloads for c in churn), tags=tags)
        config = found[0][1].config
        self._gauge_if_known('worker.timeout', config.timeout_seconds, tags)
        self._gauge_if_known('worker.threads', config.threads, tags)
        self._gauge_if_known('worker.max_requests', config.max_requests, tags)
        ages = [age for _, h in found for age in h.web_heartbeat_ages]
        if ages:
            self.gauge('worker.heartbeat_age.max', max(ages), tags=tags)
            self.gauge('worker.heartbeat_age.avg', sum(ages) / len(ages), tags=tags)
        if config.timeout_seconds:
            late = self.config.heartbeat_timeout_share * config.timeout_seconds
            self.gauge('workers.near_timeout', sum(1 for age in ages if age >= late), tags=tags)
        dirty = [h for _, h in found if h.dirty_configured]
        if dirty:
            self.gauge('dirty_arbiter.up', int(any(h.stats.dirty_arbiter_pid for h in dirty)), tags=tags)
            dirty_ages = [age for h in dirty for age in (h.dirty_heartbeat_ages or ())]
            if dirty_ages:
                self.gauge('dirty_worker.heartbeat_age.max', max(dirty_ages), tags=tags)
                self.gauge('dirty_worker.heartbeat_age.avg', sum(dirty_ages) / len(dirty_ages), tags=tags)

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
            self._procfs.hidepid(),
        )
        tags = [*self._instance_tags, *(['app:%s' % self._last_app] if self._last_app else [])]
        self.service_check(self.SERVICE_CHECK, AgentCheck.CRITICAL, tags=tags, message=message)
        self.warning(message)

    @AgentCheck.metadata_entrypoint
    def _collect_version(self, trees: list[AppTree]) -> None:
        found = self._version.read(trees)  # once per master: reading it costs file reads or a subprocess
        if found is not None and found.problem:
            self.warning(version_unknown_message(found.master_pid, found.problem))
        if found is not None and found.version:
            self.set_metadata('version', found.version)
