"""The ground is real: scheduler, Job controller, garbage collector, Pod Security admission,
TokenReview and OpenBao's Kubernetes auth, all on the cluster hack/cluster starts."""

from __future__ import annotations

import json

import hvac
import hvac.exceptions
import pytest

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
from tests.support.kube import get, wait_for


def test_kwok_pools_carry_their_labels(kubectl: Kubectl) -> None:
    nodes = get(kubectl, "nodes", "-l", "type=kwok")["items"]
    pools = {n["metadata"]["labels"]["sealtune.dev/pool"] for n in nodes}
    assert pools == {"gpu", "confidential-gpu", "cpu"}
    regions = {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in nodes}
    assert regions == {"eu-west-1", "us-east-1"}
    for node in nodes:
        labels = node["metadata"]["labels"]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        if labels["sealtune.dev/pool"] == "confidential-gpu":
            assert labels["nvidia.com/cc.mode.state"] == "on"
            assert labels["nvidia.com/cc.ready.state"] == "true"
            assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    runtime_class = get(kubectl, "runtimeclass", "kata-qemu-nvidia-gpu-tdx")
    assert runtime_class["scheduling"]["nodeSelector"] == {"nvidia.com/cc.ready.state": "true"}


def test_indexed_job_is_scheduled_by_selector_and_completes(kubectl: Kubectl, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "indexed", "namespace": namespace},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"sealtune.dev/pool": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "containers": [
                        {
                            "name": "worker",
                            "image": "example.invalid/worker:1",
                            "resources": {"limits": {"nvidia.com/gpu": "2"}},
                        }
                    ],
                }
            },
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(job))
    kubectl("wait", "--for=condition=Complete", "job/indexed", "-n", namespace, "--timeout=120s")
    pods = get(kubectl, "pods", "-n", namespace, "-l", "job-name=indexed")["items"]
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1"]
    for pod in pods:
        node = get(kubectl, "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["sealtune.dev/pool"] == "gpu"


def test_deleting_an_owner_cascades_to_its_dependents(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = get(kubectl, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(dependent))
    kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(lambda: kubectl("get", "configmap", "dependent", "-n", namespace, check=False).returncode != 0)


def test_restricted_pod_security_refuses_a_privileged_pod(kubectl: Kubectl, namespace: str) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "example.invalid/x:1",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    result = kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr


def test_service_account_token_passes_token_review(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "serviceaccount", "reviewed", "-n", namespace)
    token = kubectl("create", "token", "reviewed", "-n", namespace, "--audience", "vault").stdout.strip()
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["vault"]},
    }
    result = json.loads(kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout)
    assert result["status"]["authenticated"] is True
    assert result["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:reviewed"


def test_openbao_kubernetes_auth_accepts_only_the_bound_service_account(
    kubectl: Kubectl, namespace: str, cluster: LocalCluster, vault: hvac.Client
) -> None:
    kubectl("create", "serviceaccount", "vault-reviewer", "-n", namespace)
    kubectl(
        "create",
        "clusterrolebinding",
        f"{namespace}-reviewer",
        "--clusterrole=system:auth-delegator",
        f"--serviceaccount={namespace}:vault-reviewer",
    )
    for sa in ("trainer", "intruder"):
        kubectl("create", "serviceaccount", sa, "-n", namespace)
    reviewer_jwt = kubectl(
        "create", "token", "vault-reviewer", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    mount = f"k8s-{namespace}"
    vault.sys.enable_auth_method("kubernetes", path=mount)
    try:
        vault.auth.kubernetes.configure(
            kubernetes_host=cluster.kubeconfig_server,
            kubernetes_ca_cert=(cluster.state / "pki" / "ca.crt").read_text(),
            token_reviewer_jwt=reviewer_jwt,
            mount_point=mount,
        )
        vault.auth.kubernetes.create_role(
            "trainer",
            bound_service_account_names=["trainer"],
            bound_service_account_namespaces=[namespace],
            audience="vault",
            ttl="5m",
            mount_point=mount,
        )
        good = kubectl("create", "token", "trainer", "-n", namespace, "--audience", "vault").stdout.strip()
        login = hvac.Client(url=cluster.vault_addr).auth.kubernetes.login("trainer", good, mount_point=mount)
        assert login["auth"]["metadata"]["service_account_name"] == "trainer"
        assert login["auth"]["lease_duration"] == 300
        other = kubectl("create", "token", "intruder", "-n", namespace, "--audience", "vault").stdout.strip()
        with pytest.raises(hvac.exceptions.Forbidden):
            hvac.Client(url=cluster.vault_addr).auth.kubernetes.login("trainer", other, mount_point=mount)
        wrong_audience = kubectl("create", "token", "trainer", "-n", namespace).stdout.strip()
        with pytest.raises(hvac.exceptions.Forbidden):
            hvac.Client(url=cluster.vault_addr).auth.kubernetes.login(
                "trainer", wrong_audience, mount_point=mount
            )
    finally:
        vault.sys.disable_auth_method(mount)
        kubectl("delete", "clusterrolebinding", f"{namespace}-reviewer", check=False)
