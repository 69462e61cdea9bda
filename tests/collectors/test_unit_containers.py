"""Container ids from /proc/PID/cgroup in the shapes each runtime writes, and container tags from the tagger stub."""

from __future__ import annotations

import logging

import pytest

from datadog_checks.base.stubs.tagging import TaggerStub
from datadog_checks.gunicorn.collectors.containers import ContainerTags, conflicts, parse_container_id
from datadog_checks.gunicorn.sources.procfs import ProcessKey, ProcFS

from ..fakeproc import FakeProc

LOG = logging.getLogger('test')
ID = '3f0a4c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a'
OTHER = 'a' * 64


@pytest.mark.parametrize(
    'cgroup, expected',
    [
        # Docker, cgroupfs driver, cgroup v1 (several hierarchies, all naming the container)
        ('12:memory:/docker/%s\n11:cpu,cpuacct:/docker/%s\n1:name=systemd:/docker/%s\n' % (ID, ID, ID), ID),
        # Docker, systemd driver, cgroup v2
        ('0::/system.slice/docker-%s.scope\n' % ID, ID),
        # Docker on a hybrid host: v1 lines and the v2 line
        ('3:cpu:/docker/%s\n0::/system.slice/docker-%s.scope\n' % (ID, ID), ID),
        # Kubernetes with containerd, cgroupfs driver (v1)
        ('4:pids:/kubepods/burstable/pod0b1c2d3e-aaaa-bbbb-cccc-123456789abc/%s\n' % ID, ID),
        # Kubernetes with containerd, systemd driver (v2)
        (
            '0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b1c2d3e_aaaa_bbbb_cccc_123456789abc'
            '.slice/cri-containerd-%s.scope\n' % ID,
            ID,
        ),
        # CRI-O (v2)
        ('0::/kubepods.slice/kubepods-pod1.slice/crio-%s.scope\n' % ID, ID),
        # CRI-O's monitor process is not the container
        ('0::/kubepods.slice/kubepods-pod1.slice/crio-conmon-%s.scope\n' % ID, None),
        # Podman, rootful and rootless
        ('0::/machine.slice/libpod-%s.scope\n' % ID, ID),
        ('0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-%s.scope/container\n' % ID, ID),
        ('0::/machine.slice/libpod-conmon-%s.scope\n' % ID, None),
        # Seen from another cgroup namespace
        ('0::/../../docker-%s.scope\n' % ID, ID),
        # kind: a container in a container: the inner one
        ('0::/docker/%s/kubepods/besteffort/pod1/%s\n' % (OTHER, ID), ID),
        # ECS on Fargate
        (
            '0::/ecs/8f7e6d5c4b3a29180716253443526170/8f7e6d5c4b3a29180716253443526170-2311847025\n',
            '8f7e6d5c4b3a29180716253443526170-2311847025',
        ),
        # Not in a container
        ('0::/user.slice/user-1000.slice/session-3.scope\n', None),
        ('0::/init.scope\n', None),
        ('0::/\n', None),  # the Agent's own cgroup namespace
        ('12:memory:/system.slice/gunicorn.service\n', None),
        ('', None),
    ],
)
def test_container_id_from_cgroup(cgroup, expected):
    assert parse_container_id(cgroup.encode()) == expected


def tagger_with(tags):
    stub = TaggerStub()
    stub.set_tags(tags)
    return stub


def test_tags_come_from_the_tagger_with_orchestrator_cardinality(tmp_path):
    FakeProc(tmp_path).add(100, 1, 'gunicorn: master [web]')
    (tmp_path / '100' / 'cgroup').write_text('0::/system.slice/docker-%s.scope\n' % ID)
    stub = tagger_with({'container_id://%s' % ID: ['pod_name:web-1', 'kube_deployment:web', 'pod_name:web-1']})
    tags = ContainerTags(ProcFS(str(tmp_path)), LOG, tagger=stub)
    key = ProcessKey(100, 1000)
    assert tags.tags(key) == ('kube_deployment:web', 'pod_name:web-1')
    stub.assert_called('container_id://%s' % ID, stub.ORCHESTRATOR)
    tags.tags(key)
    assert len(stub._calls) == 1  # cached for the life of the master


def test_no_container_or_no_tagger_means_no_tags(tmp_path):
    FakeProc(tmp_path).add(100, 1, 'x').add(200, 1, 'y')
    (tmp_path / '100' / 'cgroup').write_text('0::/user.slice/session-1.scope\n')
    stub = tagger_with({})
    tags = ContainerTags(ProcFS(str(tmp_path)), LOG, tagger=stub)
    assert tags.tags(ProcessKey(100, 1000)) == ()
    assert tags.tags(ProcessKey(200, 1000)) == ()  # no cgroup file at all
    assert tags.tags(ProcessKey(300, 1000)) == ()  # no process at all
    assert stub._calls == []
    (tmp_path / '200' / 'cgroup').write_text('0::/docker/%s\n' % ID)
    assert ContainerTags(ProcFS(str(tmp_path)), LOG, tagger=None).tags(ProcessKey(200, 1000)) == ()


def test_a_container_the_tagger_does_not_know_yet_is_asked_again(tmp_path):
    FakeProc(tmp_path).add(100, 1, 'x')
    (tmp_path / '100' / 'cgroup').write_text('0::/docker/%s\n' % ID)
    stub = tagger_with({})
    tags = ContainerTags(ProcFS(str(tmp_path)), LOG, tagger=stub)
    key = ProcessKey(100, 1000)
    assert tags.tags(key) == ()
    stub.set_tags({'container_id://%s' % ID: ['pod_name:web-1']})
    assert tags.tags(key) == ('pod_name:web-1',)


def test_a_failing_tagger_means_no_tags(tmp_path):
    class Broken:
        ORCHESTRATOR = 1

        def tag(self, entity, cardinality):
            raise RuntimeError('rtloader: no tagger')

    FakeProc(tmp_path).add(100, 1, 'x')
    (tmp_path / '100' / 'cgroup').write_text('0::/docker/%s\n' % ID)
    assert ContainerTags(ProcFS(str(tmp_path)), LOG, tagger=Broken()).tags(ProcessKey(100, 1000)) == ()


def test_cache_is_pruned_to_live_masters(tmp_path):
    FakeProc(tmp_path).add(100, 1, 'x')
    (tmp_path / '100' / 'cgroup').write_text('0::/docker/%s\n' % ID)
    tags = ContainerTags(ProcFS(str(tmp_path)), LOG, tagger=tagger_with({'container_id://%s' % ID: ['a:b']}))
    tags.tags(ProcessKey(100, 1000))
    tags.forget_except([])
    assert tags._ids == {} and tags._tags == {}


@pytest.mark.parametrize(
    'instance_tags, container_tags, conflict',
    [
        ([], ['pod_name:web-1'], False),  # a host-level instance: every container is its business
        (['team:web', 'env:prod'], ['pod_name:web-1', 'env:staging'], False),  # user tags never exclude
        (['pod_name:web-1', 'kube_deployment:web'], ['pod_name:web-1', 'kube_deployment:web'], False),
        (['pod_name:web-1'], ['pod_name:web-2'], True),  # an Autodiscovery instance of another pod
        (['kube_deployment:web', 'image_tag:v2'], ['kube_deployment:web', 'image_tag:v1'], True),
        (['kube_deployment:web'], ['kube_deployment:web', 'pod_name:web-2'], False),  # replicas share low tags
        (['kube_deployment:web'], [], False),  # in a container the tagger does not know yet: kept
    ],
)
def test_conflicts(instance_tags, container_tags, conflict):
    assert conflicts(instance_tags, container_tags) is conflict


def test_a_master_outside_containers_is_not_an_autodiscovery_instances_business():
    assert conflicts(['pod_name:web-1'], [], in_container=False)
    assert not conflicts(['team:web'], [], in_container=False)
