"""The operator core on the real control plane: placement, rendezvous, policy, Pod Security
and idempotency, observed from the outside with kubectl."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.support.kube import apply, get, of_job, pods_of, wait_condition, wait_for, workload_of
from tests.support.objects import confidential_placement, domain_with_claims, finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess

pytestmark = pytest.mark.usefixtures("operator")
CHILD_KINDS = ("jobs.batch", "services", "networkpolicies", "serviceaccounts", "configmaps")


def test_restricted_domain_lands_only_on_confidential_nodes_and_waits_for_capacity(
    kubectl: Kubectl, team_namespace: str
) -> None:
    ns = team_namespace
    domain = f"{ns}-cc"
    apply(
        kubectl,
        *domain_with_claims(
            domain,
            ns,
            classification="restricted",
            placement=confidential_placement(),
            limits={"maxGPUsPerWorker": 8},
        ),
    )
    # Fill the confidential pool (2 nodes x 8 GPUs) for a while; the plain GPU pool stays free.
    apply(
        kubectl,
        finetune_job(
            "filler", ns, domain, resources={"workers": 2, "gpusPerWorker": 8}, podMetadata=kwok_runtime(25)
        ),
    )
    wait_condition(kubectl, ns, "filler", "Running", timeout=60)
    apply(kubectl, finetune_job("waiter", ns, domain, resources={"workers": 1, "gpusPerWorker": 4}))
    blocked = wait_condition(kubectl, ns, "waiter", "Scheduled", "False", reason="Unschedulable", timeout=60)
    assert "Insufficient nvidia.com/gpu" in blocked["message"]
    assert all(not p["spec"].get("nodeName") for p in pods_of(kubectl, ns, "waiter")), "placed outside policy"
    ftj = get(kubectl, "ftj", "waiter", "-n", ns)
    assert ftj["status"]["phase"] == "Pending"

    wait_condition(kubectl, ns, "filler", "Succeeded", timeout=120)
    wait_condition(kubectl, ns, "waiter", "Succeeded", timeout=120)
    for job in ("filler", "waiter"):
        for pod in pods_of(kubectl, ns, job):
            assert pod["spec"]["runtimeClassName"] == "kata-qemu-nvidia-gpu-tdx"
            node = get(kubectl, "node", pod["spec"]["nodeName"])
            assert node["metadata"]["labels"]["sealtune.dev/pool"] == "confidential-gpu"
            assert node["metadata"]["labels"]["nvidia.com/cc.ready.state"] == "true"
    status = get(kubectl, "ftj", "waiter", "-n", ns)["status"]
    assert status["placement"]["runtimeClassName"] == "kata-qemu-nvidia-gpu-tdx"
    assert all(n.startswith("kwok-cc-gpu-") for n in status["placement"]["nodes"])


def test_two_workers_get_indexes_rendezvous_and_succeed(kubectl: Kubectl, team_namespace: str) -> None:
    ns = team_namespace
    apply(
        kubectl,
        *domain_with_claims(f"{ns}-d", ns),
        finetune_job("pair", ns, f"{ns}-d", resources={"workers": 2, "gpusPerWorker": 2}),
    )
    wait_condition(kubectl, ns, "pair", "Succeeded", timeout=120)
    pods = pods_of(kubectl, ns, "pair")
    work = workload_of(kubectl, ns, "pair")
    assert {p["metadata"]["namespace"] for p in pods} == {work.namespace}, (
        "workers run in the domain's namespace"
    )
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1"]
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert (
            env["MASTER_ADDR"]
            == f"{work.worker_hostname(0)}.{work.service}.{work.namespace}.svc.cluster.local"
        )
        assert env["MASTER_PORT"] == "29500"
        assert env["WORLD_SIZE"] == "4"
        assert env["NPROC_PER_NODE"] == "2"
        assert pod["spec"]["subdomain"] == work.service
        index = int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        assert pod["spec"]["hostname"] == work.worker_hostname(index)
    service = get(kubectl, "service", work.service, "-n", work.namespace)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {
        "sealtune.dev/finetunejob-uid": get(kubectl, "ftj", "pair", "-n", ns)["metadata"]["uid"],
        "app.kubernetes.io/component": "worker",
    }
    ftj = get(kubectl, "ftj", "pair", "-n", ns)
    assert ftj["status"]["phase"] == "Succeeded"
    assert ftj["status"]["observedGeneration"] == ftj["metadata"]["generation"]
    events = get(
        kubectl,
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=pair,involvedObject.kind=FineTuneJob",
    )
    assert {"Admitted", "TrainingCompleted"} <= {e["reason"] for e in events["items"]}


def test_pods_meet_the_restricted_pod_security_standard(kubectl: Kubectl, team_namespace: str) -> None:
    ns = team_namespace
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns), finetune_job("secure", ns, f"{ns}-d"))
    wait_for(lambda: pods_of(kubectl, ns, "secure"), timeout=60)
    pod = pods_of(kubectl, ns, "secure")[0]
    # The workload namespace enforces "restricted": the pod exists, so admission accepted it.
    workload_namespace = get(kubectl, "namespace", pod["metadata"]["namespace"])
    assert workload_namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    memory_volumes = [v for v in pod["spec"]["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    assert memory_volumes and all(v["emptyDir"].get("sizeLimit") for v in memory_volumes)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"namespace": "default"}, "metadata.namespace", "does not admit namespace default"),
        (
            {"spec": {"method": {"type": "full", "lora": None}}},
            "spec.method.type",
            "method full is not allowed",
        ),
        (
            {"spec": {"resources": {"workers": 1, "gpusPerWorker": 9}}},
            "spec.resources.gpusPerWorker",
            "exceeds the domain's limit of 8",
        ),
    ],
)
def test_webhook_refuses_policy_violations_naming_the_field(
    kubectl: Kubectl, team_namespace: str, change: dict[str, Any], field: str, words: str
) -> None:
    ns = team_namespace
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns, limits={"maxGPUsPerWorker": 8}))
    job = finetune_job("refused", change.get("namespace", ns), f"{ns}-d", **change.get("spec", {}))
    result = kubectl("apply", "-f", "-", input=json.dumps(job), check=False)
    assert result.returncode != 0
    assert 'admission webhook "policy.validate.sealtune.dev" denied the request' in result.stderr
    assert f"{field}: " in result.stderr and words in result.stderr


def test_reconcile_enforces_policy_without_the_webhook(
    kubectl: Kubectl, team_namespace: str, operator: OperatorProcess
) -> None:
    ns = team_namespace
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns, methods=["lora"]))
    kubectl("delete", "validatingwebhookconfiguration", "validate.sealtune.dev")
    try:
        apply(kubectl, finetune_job("sneaky", ns, f"{ns}-d", method={"type": "full", "lora": None}))
        refused = wait_condition(kubectl, ns, "sneaky", "PolicyAdmitted", "False", reason="MethodNotAllowed")
        assert "spec.method.type" in refused["message"]
        assert get(kubectl, "ftj", "sneaky", "-n", ns)["status"]["phase"] == "Blocked"
        time.sleep(2)
        for kind in CHILD_KINDS:
            assert of_job(kubectl, kind, ns, "sneaky") == [], f"{kind} created for a refused job"
    finally:
        operator.restart()  # the configuration comes back, as the admin installs it, and is registered in


def fingerprint(kind: str, item: dict[str, Any]) -> tuple[str, ...]:
    meta = item["metadata"]
    if kind == "jobs.batch":
        # The Job controller writes the Job's status as pods progress; what the operator
        # owns is the object and its spec, so compare those.
        ours = [m["time"] for m in meta["managedFields"] if m["manager"] == "sealtune-operator"]
        return (meta["name"], meta["uid"], str(meta["generation"]), *ours)
    return (meta["name"], meta["uid"], meta["resourceVersion"])


def children(kubectl: Kubectl, namespace: str, name: str) -> dict[str, list[tuple[str, ...]]]:
    selector = f"sealtune.dev/finetunejob={name},sealtune.dev/finetunejob-namespace={namespace}"
    return {
        kind: [
            fingerprint(kind, i)
            for i in get(kubectl, kind, "-A", "-l", selector, "--show-managed-fields")["items"]
        ]
        for kind in CHILD_KINDS
    }


def test_restarts_and_reapplies_create_no_duplicates_and_change_nothing(
    kubectl: Kubectl, team_namespace: str, operator: OperatorProcess
) -> None:
    ns = team_namespace
    manifest = finetune_job(
        "steady", ns, f"{ns}-d", resources={"workers": 2, "gpusPerWorker": 1}, podMetadata=kwok_runtime(300)
    )
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns), manifest)
    wait_condition(kubectl, ns, "steady", "Running", timeout=60)
    before = children(kubectl, ns, "steady")
    assert all(len(items) == 1 for items in before.values()), before
    for _ in range(10):
        operator.restart()
        time.sleep(0.5)
    apply(kubectl, manifest)
    time.sleep(3)
    assert children(kubectl, ns, "steady") == before
    assert len(pods_of(kubectl, ns, "steady")) == 2
    wait_condition(kubectl, ns, "steady", "Running")


def test_suspend_and_resume(kubectl: Kubectl, team_namespace: str) -> None:
    ns = team_namespace
    job = finetune_job("paused", ns, f"{ns}-d", scheduling={"suspend": True})
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns), job)
    wait_condition(kubectl, ns, "paused", "Suspended", reason="SuspendedByUser")
    work = workload_of(kubectl, ns, "paused")
    assert get(kubectl, "job", work.batch_job, "-n", work.namespace)["spec"]["suspend"] is True
    assert pods_of(kubectl, ns, "paused") == []
    kubectl(
        "patch", "ftj", "paused", "-n", ns, "--type=merge", "-p", '{"spec":{"scheduling":{"suspend":false}}}'
    )
    wait_condition(kubectl, ns, "paused", "Suspended", "False")
    wait_condition(kubectl, ns, "paused", "Succeeded", timeout=120)


def test_failed_job_reports_the_reason_and_ttl_deletes_it(kubectl: Kubectl, team_namespace: str) -> None:
    ns = team_namespace
    job = finetune_job(
        "doomed",
        ns,
        f"{ns}-d",
        scheduling={"activeDeadlineSeconds": 60, "backoffLimit": 0, "ttlSecondsAfterFinished": 5},
    )
    job["spec"]["podMetadata"] = kwok_runtime(600)  # longer than the deadline
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns), job)
    failed = wait_condition(kubectl, ns, "doomed", "Failed", reason="DeadlineExceeded", timeout=120)
    assert failed["status"] == "True"
    wait_for(lambda: kubectl("get", "ftj", "doomed", "-n", ns, check=False).returncode != 0, timeout=60)
    for kind in CHILD_KINDS:  # the finalizer took its workload, in another namespace, with it
        wait_for(lambda kind=kind: not of_job(kubectl, kind, ns, "doomed"), 60)
