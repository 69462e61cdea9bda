"""The container a master runs in, from /proc/PID/cgroup, and that container's tags from the Agent's tagger.

/proc/PID/cgroup has one `hierarchy-ID:controllers:path` line per hierarchy (cgroup v1) or the single line
`0::path` (cgroup v2). Container runtimes put the container id in the path:

| runtime | cgroup path (last segments) |
|---|---|
| Docker, cgroupfs driver (v1) | `/docker/<64 hex>` |
| Docker, systemd driver (v1 and v2) | `/system.slice/docker-<64 hex>.scope` |
| containerd under Kubernetes | `/kubepods/burstable/pod<uid>/<64 hex>`, `.../cri-containerd-<64 hex>.scope` |
| CRI-O | `.../crio-<64 hex>.scope` (its monitor is `crio-conmon-<id>.scope`, not the container) |
| Podman | `.../libpod-<64 hex>.scope`, rootless `.../libpod-<64 hex>.scope/container` |
| ECS on Fargate | `/ecs/<task id>/<32 hex>-<digits>` |

The deepest segment that holds an id wins (a container nested in another one, such as kind's nodes, is the inner
one). When the Agent reads another cgroup namespace the path may start with `/..`; the id is still in it. A process
in the Agent's own cgroup namespace shows `0::/` and yields no id: no container tags, which is also what happens
outside containers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..sources.procfs import ProcError, ProcessKey, ProcFS
from .discovery import AppTree

try:
    # The Agent's tagger (rtloader builtin `tagger`); outside the Agent the stub returns no tags.
    from datadog_checks.base.utils.tagging import tagger
except ImportError:  # pragma: no cover - datadog_checks.base always ships it
    tagger = None

_SEGMENT = re.compile(
    r'\A(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?(?P<id>[0-9a-f]{64})(?:\.scope)?\Z'
    r'|\A(?P<fargate>[0-9a-f]{32}-[0-9]{1,10})\Z'
)
# Tag keys the tagger derives from a container's identity; instance tags with these keys come from Autodiscovery,
# which adds the tags of the container an instance was scheduled for.
IDENTITY_TAG_KEYS = frozenset(
    {
        'container_id',
        'container_name',
        'docker_image',
        'ecs_container_name',
        'image_name',
        'image_tag',
        'kube_container_name',
        'kube_cronjob',
        'kube_daemon_set',
        'kube_deployment',
        'kube_job',
        'kube_namespace',
        'kube_ownerref_name',
        'kube_replica_set',
        'kube_stateful_set',
        'pod_name',
        'short_image',
        'task_arn',
        'task_family',
    }
)


def parse_container_id(cgroup: bytes) -> str | None:
    """The id of the container a process runs in, from the contents of its /proc/PID/cgroup, or None."""
    paths = []
    for line in cgroup.decode('utf-8', 'replace').splitlines():
        parts = line.split(':', 2)
        if len(parts) == 3:
            paths.append(parts[2])
    # The v2 line (`0::`) comes last on hybrid hosts; any hierarchy names the same container.
    for path in reversed(paths):
        for segment in reversed(path.split('/')):
            match = _SEGMENT.match(segment)
            if match:
                return match['id'] or match['fargate']
    return None


def conflicts(instance_tags: Iterable[str], container_tags: Iterable[str], in_container: bool = True) -> bool:
    """Whether a master's container is not the one an instance's tags describe.

    Autodiscovery schedules one instance per container and adds that container's tags to it (unless the template
    sets `ignore_autodiscovery_tags`). Such an instance sees every master on the host through /proc; a master whose
    container has another value for one of the identity keys, or that runs in no container at all, belongs to
    another instance, and reporting it here would give it this container's tags. Instances without identity tags
    (a conf.d file) are concerned by every master.
    """
    wanted: dict[str, set[str]] = {}
    for tag in instance_tags:
        key, sep, value = tag.partition(':')
        if sep and key in IDENTITY_TAG_KEYS:
            wanted.setdefault(key, set()).add(value)
    if not wanted:
        return False
    if not in_container:
        return True
    for tag in container_tags:
        key, sep, value = tag.partition(':')
        if sep and key in wanted and value not in wanted[key]:
            return True
    return False


@dataclass
class ContainerTags:
    """Tags of the container of each master, cached for the master's life (a process never changes container)."""

    procfs: ProcFS
    log: logging.Logger | logging.LoggerAdapter
    tagger: object = tagger
    _ids: dict[ProcessKey, str | None] = field(default_factory=dict)
    _tags: dict[ProcessKey, tuple[str, ...]] = field(default_factory=dict)

    def container_id(self, key: ProcessKey) -> str | None:
        if key not in self._ids:
            try:
                self._ids[key] = parse_container_id(self.procfs.read_cgroup(key.pid))
            except ProcError as exc:
                self.log.debug('Cannot read the cgroup of %s: %s', key.pid, exc)
                return None
        return self._ids[key]

    def tags(self, key: ProcessKey) -> tuple[str, ...]:
        if key in self._tags:
            return self._tags[key]
        container = self.container_id(key)
        if container is None or self.tagger is None:
            return ()
        try:
            tags = tuple(sorted(set(self.tagger.tag('container_id://%s' % container, self.tagger.ORCHESTRATOR) or ())))
        except (TypeError, ValueError, RuntimeError) as exc:  # rtloader's argument and conversion errors
            self.log.debug('No tags from the tagger for container %s: %s', container, exc)
            return ()
        if tags:
            # An empty answer may only mean that the tagger has not seen a new container yet: ask again next run.
            self._tags[key] = tags
        return tags

    def forget_except(self, keys: Iterable[ProcessKey]) -> None:
        live = set(keys)
        for cache in (self._ids, self._tags):
            for key in [k for k in cache if k not in live]:
                del cache[key]


def group_by_tags(
    trees: list[AppTree], instance_tags: list[str], app: str | None, containers: ContainerTags
) -> dict[tuple[str, ...], list[AppTree]]:
    """The trees to report, by the tags they are reported with: the instance's, `app:`, and their container's.

    Masters with identical tags (several on a host, or replicas whose containers differ only in high-cardinality
    tags) are summed as before; replicas the tagger tells apart are reported apart. `app:` is `app` when the
    instance sets `proc_name`, else the name in the master's title or command line.
    """
    groups: dict[tuple[str, ...], list[AppTree]] = {}
    for tree in trees:
        key = tree.master.key
        container_tags = containers.tags(key)
        if conflicts(instance_tags, container_tags, containers.container_id(key) is not None):
            continue  # another container's Autodiscovery instance reports this master
        tags = tuple(dict.fromkeys([*instance_tags, 'app:%s' % (app or tree.app), *container_tags]))
        groups.setdefault(tags, []).append(tree)
    containers.forget_except(t.master.key for t in trees)
    return groups
