"""Quotas and queues through the local cluster's real Kueue (hack/lib/kueue.sh) on the kwok
pools. A cluster admin models the pools as ResourceFlavors, gives each team a ClusterQueue with
its GPU quota, and makes a LocalQueue per team in the domain's workload namespace, where every
team's Jobs run; the domain's spec.placement.queues lets only the team's namespace name it, so
the quota follows the team's jobs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sealtune.names import workload_namespace
from tests.conftest import Kubectl
from tests.support.kube import apply, condition, get, pods_of, wait_condition, wait_for
from tests.support.objects import domain_with_claims, finetune_job, kwok_runtime

pytestmark = pytest.mark.usefixtures("operator")
KUEUE = "kueue.x-k8s.io/v1beta2"
POOLS = ("gpu", "confidential-gpu", "cpu")


def flavors() -> list[dict[str, Any]]:
    """One ResourceFlavor per pool: Kueue merges its node label into an admitted Job, and skips
    a flavor that conflicts with the Job's own placement, so confidential and ordinary work never
    share one."""
    return [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": pool},
         "spec": {"nodeLabels": {"sealtune.dev/pool": pool}}}
        for pool in POOLS
    ]  # fmt: skip


def in_kueues_words(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    """The job's QueueAdmitted condition once it carries Kueue's reason for the wait."""
    found = condition(kubectl, namespace, name, "QueueAdmitted")
    if found and found["reason"] == "Waiting" and "quota" in found["message"]:
        return found
    return None


def team_queue(cluster_queue: str, local_queue: str, namespace: str, gpus: int) -> list[dict[str, Any]]:
    """The team's ClusterQueue (its GPU quota on the gpu flavor) and its LocalQueue in the
    domain's workload namespace."""
    quota = [
        {"name": "cpu", "nominalQuota": "64"},
        {"name": "memory", "nominalQuota": "256Gi"},
        {"name": "nvidia.com/gpu", "nominalQuota": gpus},
    ]
    return [
        {
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "queueingStrategy": "StrictFIFO",
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [{"name": "gpu", "resources": quota}],
                    }
                ],
            },
        },
        {
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": {"name": local_queue, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]


def queued_job(
    name: str, namespace: str, domain: str, seconds: int, queue: str = "team-a", **spec: Any
) -> dict[str, Any]:
    return finetune_job(
        name,
        namespace,
        domain,
        resources={"workers": 1, "gpusPerWorker": 2, "cpu": "1", "memory": "1Gi"},
        podMetadata=kwok_runtime(seconds),
        **{"scheduling": {"queueName": queue}, **spec},
    )


def test_each_teams_jobs_over_its_quota_wait_with_kueues_message_and_start_in_order_as_it_frees(
    kubectl: Kubectl, team_namespace: str
) -> None:
    """Two teams on one domain, two GPUs of quota each: each team's first job runs (four GPUs in
    use: the quotas are the teams' own), each team's second waits in Kueue's words and starts
    once its own first has finished."""
    teams = {"a": team_namespace, "b": f"{team_namespace[:55]}-b"}
    kubectl("create", "namespace", teams["b"])
    domain = f"{team_namespace}-q"
    grants = [{"name": f"team-{t}", "namespaces": [ns]} for t, ns in teams.items()]
    apply(
        kubectl, *domain_with_claims(domain, teams["a"], placement={"requireQueue": True, "queues": grants})
    )
    kubectl("patch", "datadomain", domain, "--type=json", "-p", json.dumps(
        [{"op": "add", "path": "/spec/access/namespaces/-", "value": teams["b"]}]))  # fmt: skip
    cluster_queues = {t: f"{team_namespace[:50]}-team-{t}" for t in teams}
    for t, cluster_queue in cluster_queues.items():
        apply(
            kubectl, *flavors(), *team_queue(cluster_queue, f"team-{t}", workload_namespace(domain), gpus=2)
        )
    try:
        for t, ns in teams.items():
            apply(kubectl, queued_job("first", ns, domain, 20, queue=f"team-{t}"))
        for t, ns in teams.items():
            admitted = wait_condition(kubectl, ns, "first", "QueueAdmitted", reason="Admitted", timeout=90)
            assert f"ClusterQueue {cluster_queues[t]}, flavor gpu" in admitted["message"], admitted
            wait_condition(kubectl, ns, "first", "Running", timeout=60)
            for pod in pods_of(kubectl, ns, "first"):
                node = get(kubectl, "node", pod["spec"]["nodeName"])
                assert node["metadata"]["labels"]["sealtune.dev/pool"] == "gpu"

        # Each team's quota is spent: its next job waits, in Kueue's words, and runs nothing.
        for t, ns in teams.items():
            apply(kubectl, queued_job("second", ns, domain, 5, queue=f"team-{t}"))
        for ns in teams.values():
            waiting = wait_for(lambda ns=ns: in_kueues_words(kubectl, ns, "second"), 60)
            assert waiting["message"].startswith("Workload job-second-"), waiting
            held = wait_condition(kubectl, ns, "second", "Suspended", reason="QueuedByKueue", timeout=30)
            assert held["message"] == waiting["message"]
            assert get(kubectl, "ftj", "second", "-n", ns)["status"]["phase"] == "Suspended"
            assert pods_of(kubectl, ns, "second") == []

        # Each first finishes and frees its team's quota: Kueue admits that team's second.
        for ns in teams.values():
            finished = wait_condition(kubectl, ns, "first", "Succeeded", timeout=120)
            started = wait_condition(kubectl, ns, "second", "QueueAdmitted", reason="Admitted", timeout=90)
            assert started["lastTransitionTime"] >= finished["lastTransitionTime"]
            wait_condition(kubectl, ns, "second", "Succeeded", timeout=120)
    finally:
        kubectl("delete", "clusterqueue", *cluster_queues.values(), "--wait=false", check=False)
        kubectl("delete", "finetunejobs", "--all", "-n", teams["b"], "--timeout=60s", check=False)
        kubectl("delete", "namespace", teams["b"], "--wait=false", check=False)


def test_a_job_without_a_queue_or_with_another_teams_is_refused_where_the_domain_requires_one(
    kubectl: Kubectl, team_namespace: str
) -> None:
    ns = team_namespace
    domain = f"{ns}-q"
    queues = [{"name": "team-a", "namespaces": [ns]}, {"name": "team-b", "namespaces": ["team-b"]}]
    apply(kubectl, *domain_with_claims(domain, ns, placement={"requireQueue": True, "queues": queues}))
    for name, scheduling, words in (
        ("unqueued", {}, "spec.placement.requireQueue"),
        ("borrowed", {"queueName": "team-b"}, f"LocalQueue team-b is not open to namespace {ns}"),
    ):
        job = queued_job(name, ns, domain, 5, scheduling=scheduling)
        result = kubectl("apply", "-f", "-", input=json.dumps(job), check=False)
        assert result.returncode != 0, f"{name} admitted"
        assert "spec.scheduling.queueName: " in result.stderr and words in result.stderr, result.stderr
