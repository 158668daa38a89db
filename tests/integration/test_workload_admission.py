"""The workload namespace's ValidatingAdmissionPolicies, enforced by the real API server.

The "careless admin" case: someone binds `edit` in a domain's workload namespace to a tenant.
Acting as that tenant (impersonation, as Kubernetes' own e2e tests exercise RBAC), the tenant
still cannot create pods or Jobs there, change a Job's spec or mint a trainer's token; a pod
that claims to come from the Job controller is refused without its Job or outside the domain's
pools; and a Job the operator's identity applies (built by the real builders) is admitted and
the Job controller makes its pods. The policies' CEL type-checks clean.

Self-cleaning: the policies are the builders' under names of this test's own (so an operator
that installed the real ones is never touched), and everything is deleted afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sealtune.api.v1alpha1 import DataDomain, FineTuneJob
from sealtune.builders import admission
from sealtune.builders.identity import service_account
from sealtune.builders.meta import workload_of
from sealtune.builders.workload import indexed_job
from sealtune.settings import Settings
from tests.conftest import Kubectl
from tests.support.kube import apply, get, wait_for
from tests.support.objects import data_domain, finetune_job

JOB_CONTROLLER = [
    "--as=system:serviceaccount:kube-system:job-controller",
    "--as-group=system:serviceaccounts",
    "--as-group=system:serviceaccounts:kube-system",
    "--as-group=system:authenticated",
]


@dataclass(frozen=True)
class Workload:
    domain: str
    namespace: str
    tenant: str
    operator: str
    policies: tuple[str, ...]

    def as_tenant(self) -> list[str]:
        return [f"--as={self.tenant}", "--as-group=system:authenticated"]


def restricted_pod(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A pod that Pod Security "restricted" admits, so only sealtune's policies can refuse it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "c",
                    "image": "localhost/sealtune/trainer:any",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
            **spec,
        },
    }


def create(kubectl: Kubectl, obj: dict[str, Any], *identity: str) -> Any:
    return kubectl(*identity, "create", "-f", "-", input=json.dumps(obj), check=False)


def refused(result: Any, rule: str) -> None:
    assert result.returncode != 0, f"admitted, expected {rule} to refuse:\n{result.stdout}"
    assert rule in result.stderr, result.stderr


def renamed(objects: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """The builders' policies and bindings under this test's own names."""
    out: list[dict[str, Any]] = json.loads(json.dumps(objects))
    for obj in out:
        obj["metadata"]["name"] = f"{obj['metadata']['name']}-{suffix}"
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            obj["spec"]["policyName"] = f"{obj['spec']['policyName']}-{suffix}"
    return out


@pytest.fixture(scope="module")
def workload(kubectl: Kubectl, crds_installed: None) -> Iterator[Workload]:
    suffix = uuid.uuid4().hex[:6]
    domain, namespace = f"wl-{suffix}", f"sealtune-w-{suffix}"
    # The operator's identity here is the test's own (as the operator finds its own at start).
    review = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    operator = admission.username_from_self_subject_review(review)
    policies = renamed(admission.workload_policies(operator), suffix)
    bindings = renamed(admission.workload_bindings(domain, namespace), suffix)
    names = tuple(p["metadata"]["name"] for p in policies)
    try:
        apply(kubectl, data_domain(domain, f"team-{suffix}", workloadNamespace=namespace))
        apply(kubectl, admission.workload_namespace(domain, namespace))
        apply(kubectl, admission.baseline_network_policy(namespace), *policies, *bindings)
        # The careless admin: `edit` for a tenant in the workload namespace.
        tenant = f"tenant-{suffix}@example.com"
        kubectl(
            "create", "rolebinding", "careless", "--clusterrole=edit", f"--user={tenant}", "-n", namespace
        )
        # Policies reach the admission plugin asynchronously: wait until one refuses.
        probe = restricted_pod("probe", namespace)

        def enforced() -> bool:
            result = kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
            return result.returncode != 0 and "sealtune-workload-pods/creator" in result.stderr

        wait_for(enforced, timeout=60)
        yield Workload(domain, namespace, tenant, operator, names)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)
        for binding in bindings:
            kubectl(
                "delete",
                "validatingadmissionpolicybinding",
                binding["metadata"]["name"],
                "--ignore-not-found",
                check=False,
            )
        for name in names:
            kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)
        kubectl("delete", "datadomain", domain, "--ignore-not-found", "--wait=false", check=False)


def test_the_policies_type_check_clean(kubectl: Kubectl, workload: Workload) -> None:
    for name in workload.policies:

        def checked(name: str = name) -> dict[str, Any] | None:
            policy = get(kubectl, "validatingadmissionpolicy", name)
            status = policy.get("status") or {}
            done = (
                status.get("observedGeneration") == policy["metadata"]["generation"]
                and "typeChecking" in status
            )
            return status if done else None

        status = wait_for(checked, timeout=60)
        assert not status["typeChecking"].get("expressionWarnings"), (name, status["typeChecking"])


def test_a_tenant_cannot_create_pods_there(kubectl: Kubectl, workload: Workload) -> None:
    pod = restricted_pod("tenant-pod", workload.namespace)
    refused(create(kubectl, pod, *workload.as_tenant()), "sealtune-workload-pods/creator")


def test_a_tenant_cannot_create_jobs_there(kubectl: Kubectl, workload: Workload) -> None:
    template = restricted_pod("x", workload.namespace)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "tenant-job", "namespace": workload.namespace},
        "spec": {"template": {"spec": {**template["spec"], "restartPolicy": "Never"}}},
    }
    refused(create(kubectl, job, *workload.as_tenant()), "sealtune-workload-jobs/creator")


def test_a_tenant_cannot_mint_tokens_there(kubectl: Kubectl, workload: Workload) -> None:
    kubectl("create", "serviceaccount", "victim", "-n", workload.namespace)
    result = kubectl(
        *workload.as_tenant(), "create", "token", "victim", "-n", workload.namespace, check=False
    )
    refused(result, "sealtune-workload-access/token-for-kubelets")


def test_pods_in_the_job_controllers_name_need_their_job_and_the_domains_pools(
    kubectl: Kubectl, workload: Workload
) -> None:
    orphan = restricted_pod("orphan", workload.namespace)
    refused(create(kubectl, orphan, *JOB_CONTROLLER), "sealtune-workload-pods/owner")
    owned = restricted_pod("misplaced", workload.namespace)
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "any", "uid": str(uuid.uuid4()), "controller": True}
    ]
    refused(create(kubectl, owned, *JOB_CONTROLLER), "sealtune-workload-pods/node-pools")


def test_the_operators_job_is_admitted_and_the_job_controller_makes_its_pods(
    kubectl: Kubectl, workload: Workload
) -> None:
    body = finetune_job("tune", workload.namespace, workload.domain)
    body["metadata"]["uid"] = str(uuid.uuid4())
    ftj = FineTuneJob.model_validate(body)
    domain = DataDomain.model_validate(
        data_domain(workload.domain, "any", workloadNamespace=workload.namespace)
    )
    apply(kubectl, service_account(ftj, domain), indexed_job(ftj, domain, Settings()))  # as the operator
    job = workload_of(ftj, domain).batch_job

    def pods() -> list[dict[str, Any]]:
        selector = f"batch.kubernetes.io/job-name={job}"
        return get(kubectl, "pods", "-n", workload.namespace, "-l", selector)["items"]  # type: ignore[no-any-return]

    made = wait_for(pods, timeout=60)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Job" for p in made)

    # The tenant may not change the Job's spec, but metadata stays RBAC's business.
    patch = kubectl(
        *workload.as_tenant(), "patch", "job", job, "-n", workload.namespace,
        "--type=merge", "-p", json.dumps({"spec": {"parallelism": 0}}), check=False,
    )  # fmt: skip
    refused(patch, "sealtune-workload-access/job-writer")
    kubectl(*workload.as_tenant(), "label", "job", job, "-n", workload.namespace, "seen=yes")
    # Nor a pod's.
    pod = made[0]["metadata"]["name"]
    swap = kubectl(
        *workload.as_tenant(), "set", "image", f"pod/{pod}", "trainer=localhost/evil:1",
        "-n", workload.namespace, check=False,
    )  # fmt: skip
    refused(swap, "sealtune-workload-access/immutable-pods")
