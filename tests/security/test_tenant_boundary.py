"""The tenant boundary, tried by a tenant: a developer holding Kubernetes' built-in `edit` role
in their team's namespace (which lets them mint tokens for, exec into and create pods and Jobs
with every ServiceAccount there), and sealtune's aggregated tenant role from the chart. Each
attack is refused, by the API server (RBAC, the workload namespace's admission policies) or by
Vault, and the honest path still trains.

Against the real control plane, the operator logged in to the real OpenBao as its own
ServiceAccount, and kwok's pools for the workers (what a tenant can reach does not depend on
where the pods run). See docs/threat-model.md for the promise each test proves."""

from __future__ import annotations

import json
import uuid
from typing import Any

import hvac
import hvac.exceptions
import pytest

from sealtune.builders.vault import object_name
from sealtune.names import Workload
from tests.conftest import Kubectl
from tests.support import vaultdata
from tests.support.cluster import LocalCluster
from tests.support.kube import apply, get, of_job, pods_of, wait_condition, wait_for, workload_of
from tests.support.objects import domain_with_claims, finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess
from tests.support.tenancy import TENANT, Tenant, refused
from tests.support.vaultdata import gone, login


def restricted_pod_spec() -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sleep", "1d"],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
    }


def tenant_apply(tenant: Tenant, obj: dict[str, Any]) -> Any:
    return tenant("apply", "-f", "-", input=json.dumps(obj), check=False)


def role_exists(vault: hvac.Client, role: str) -> bool:
    return not gone(vault, f"auth/kubernetes/role/{role}")


def role_of(kubectl: Kubectl, namespace: str, name: str) -> str:
    uid = get(kubectl, "ftj", name, "-n", namespace)["metadata"]["uid"]
    return object_name(namespace, name, uid)


def secret_job(name: str, namespace: str, domain: str, path: str, **spec: Any) -> dict[str, Any]:
    secrets = [{"vaultPath": path, "key": "token", "fileName": "token"}]
    return finetune_job(name, namespace, domain, secrets=secrets, **spec)


def test_another_teams_vault_path_is_refused_at_apply_and_at_reconcile(
    vault_operator: OperatorProcess,
    vault: hvac.Client,
    kubectl: Kubectl,
    teams: tuple[str, str],
    tenant: Tenant,
) -> None:
    ours, theirs = teams
    domain = f"{ours}-d"
    apply(kubectl, *domain_with_claims(domain, ours, access={"namespaces": [ours, theirs]}))
    their_path, _ = vaultdata.write_secret(vault, theirs, "token")
    our_path, _ = vaultdata.write_secret(vault, ours, "token")

    # At apply: the webhook names the field and the fix.
    stderr = refused(
        tenant_apply(tenant, secret_job("grab", ours, domain, their_path)),
        "spec.secrets[0].vaultPath",
        their_path,
        "spec.access.vaultPaths",
    )
    assert 'admission webhook "policy.validate.sealtune.dev" denied the request' in stderr

    # Without the webhook: the reconcile refuses the same, and nothing exists in Vault for it.
    kubectl("delete", "validatingwebhookconfiguration", "validate.sealtune.dev")
    try:
        tenant_apply(tenant, secret_job("grab", ours, domain, their_path)).check_returncode()
        blocked = wait_condition(
            kubectl, ours, "grab", "PolicyAdmitted", "False", reason="SecretPathNotAllowed"
        )
        assert "spec.secrets[0].vaultPath" in blocked["message"] and their_path in blocked["message"]
        assert not role_exists(vault, role_of(kubectl, ours, "grab"))
        assert not of_job(kubectl, "jobs.batch", ours, "grab")
    finally:
        vault_operator.restart()  # the configuration comes back (as the admin installs it)

    # The honest path: the team's own secret, under the domain's {namespace} prefix, trains.
    tenant_apply(
        tenant, secret_job("honest", ours, domain, our_path, podMetadata=kwok_runtime(3))
    ).check_returncode()
    wait_condition(kubectl, ours, "honest", "SecretsReady", reason="VaultRoleReady", timeout=60)
    wait_condition(kubectl, ours, "honest", "Succeeded", timeout=120)


def attempts(tenant: Tenant, work: Workload, worker: str) -> list[tuple[str, Any]]:
    """Every way `edit` gives a tenant to act as a job's ServiceAccount, aimed at the workload
    (``worker`` names one of its pods)."""
    ns, sa = work.namespace, work.service_account
    # Pod Security "restricted" would refuse anything else before the policies are asked.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "thief", "namespace": ns},
        "spec": {**restricted_pod_spec(), "serviceAccountName": sa},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "thief", "namespace": ns},
        "spec": {"template": {"spec": {**pod["spec"], "restartPolicy": "Never"}}},
    }
    return [
        ("token request", tenant("create", "token", sa, "-n", ns, "--audience", "vault", check=False)),
        ("own pod", tenant_apply(tenant, pod)),
        ("own batch Job", tenant_apply(tenant, job)),
        ("exec", tenant("exec", "-n", ns, worker, "--", "true", check=False)),
        ("read the data claim", tenant("get", "pvc", "data", "-n", ns, check=False)),
    ]


def test_a_tenant_gets_no_vault_token_for_a_jobs_role_running_suspended_or_queued(
    vault_operator: OperatorProcess,
    cluster: LocalCluster,
    vault: hvac.Client,
    kubectl: Kubectl,
    teams: tuple[str, str],
    tenant: Tenant,
) -> None:
    ours, _ = teams
    domain = f"{ours}-d"
    apply(
        kubectl,
        *domain_with_claims(domain, ours, placement={"queues": [{"name": "nowhere", "namespaces": [ours]}]}),
    )
    path, _ = vaultdata.write_secret(vault, ours, "token")
    jobs = {
        "running": secret_job("running", ours, domain, path, podMetadata=kwok_runtime(600)),
        "suspended": secret_job("suspended", ours, domain, path, scheduling={"suspend": True}),
        # Kueue admits nothing to a LocalQueue that does not exist: it stays queued, its batch
        # Job suspended.
        "queued": secret_job("queued", ours, domain, path, scheduling={"queueName": "nowhere"}),
    }
    for job in jobs.values():
        tenant_apply(tenant, job).check_returncode()
    wait_condition(kubectl, ours, "running", "SecretsReady", reason="VaultRoleReady", timeout=60)
    wait_condition(kubectl, ours, "running", "Running", timeout=60)
    for name in ("suspended", "queued"):
        waiting = wait_condition(
            kubectl, ours, name, "SecretsReady", "False", reason="WaitingToRun", timeout=60
        )
        assert "may not run" in waiting["message"]
        # Its batch Job exists (Kueue needs it to admit the job), its role does not.
        wait_for(lambda name=name: of_job(kubectl, "jobs.batch", ours, name), 30)
        assert not role_exists(vault, role_of(kubectl, ours, name))
    assert role_exists(vault, role_of(kubectl, ours, "running"))

    for name in jobs:
        work = workload_of(kubectl, ours, name)
        assert work.namespace != ours, "the workload lives outside the team's namespace"
        workers = pods_of(kubectl, ours, name)
        worker = workers[0]["metadata"]["name"] if workers else f"{work.batch_job}-0-none"
        for what, result in attempts(tenant, work, worker):
            refused(result, "forbidden", what=f"{name}: {what}")
        # The same names in the team's own namespace get the tenant nothing: a ServiceAccount of
        # the job's name there, and a token for it (edit allows both), is not the job's.
        tenant("create", "serviceaccount", work.service_account, "-n", ours, check=False)
        jwt = tenant(
            "create", "token", work.service_account, "-n", ours, "--audience", "vault"
        ).stdout.strip()
        with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
            login(cluster, role_of(kubectl, ours, name), jwt)


def test_a_careless_edit_binding_in_the_workload_namespace_still_gets_a_tenant_nothing(
    vault_operator: OperatorProcess,
    vault: hvac.Client,
    kubectl: Kubectl,
    teams: tuple[str, str],
    tenant: Tenant,
) -> None:
    """Defence in depth: the admission policies the operator binds to every workload namespace
    hold even where someone grants a tenant `edit` there."""
    ours, _ = teams
    domain = f"{ours}-d"
    apply(kubectl, *domain_with_claims(domain, ours))
    tenant_apply(
        tenant, finetune_job("guarded", ours, domain, podMetadata=kwok_runtime(600))
    ).check_returncode()
    wait_condition(kubectl, ours, "guarded", "Running", timeout=60)
    work = workload_of(kubectl, ours, "guarded")
    kubectl(
        "create", "rolebinding", "careless", "--clusterrole=edit", f"--user={TENANT}", "-n", work.namespace
    )
    try:
        policies = {
            "token request": "sealtune-workload-access",
            "own pod": "sealtune-workload-pods",
            "own batch Job": "sealtune-workload-jobs",
            "exec": "sealtune-workload-access",
            "allow-all NetworkPolicy": "sealtune-workload-access",
        }

        def tried() -> dict[str, Any]:
            return {
                **dict(attempts(tenant, work, pods_of(kubectl, ours, "guarded")[0]["metadata"]["name"])),
                "allow-all NetworkPolicy": tenant_apply(tenant, allow_all(work)),
            }

        # RBAC sees the new binding at once; what refuses now is the policies, naming themselves.
        results = tried()
        assert results["read the data claim"].returncode == 0, "the careless binding is in force"
        for what, policy in policies.items():
            refused(results[what], policy, what=what)
        assert not kubectl("get", "networkpolicy", "open", "-n", work.namespace, check=False).stdout
    finally:
        kubectl("delete", "rolebinding", "careless", "-n", work.namespace, check=False)


def allow_all(work: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "open", "namespace": work.namespace},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}], "policyTypes": ["Ingress", "Egress"]},
    }


def test_a_tenant_cannot_reach_the_jobs_data_outputs_or_network(
    vault_operator: OperatorProcess, kubectl: Kubectl, teams: tuple[str, str], tenant: Tenant
) -> None:
    ours, _ = teams
    domain = f"{ours}-d"
    apply(kubectl, *domain_with_claims(domain, ours))
    tenant_apply(tenant, finetune_job("kept", ours, domain, podMetadata=kwok_runtime(600))).check_returncode()
    wait_condition(kubectl, ours, "kept", "Running", timeout=60)
    work = workload_of(kubectl, ours, "kept")
    uid = get(kubectl, "ftj", "kept", "-n", ours)["metadata"]["uid"]

    # The workload namespace grants the tenant nothing: not the claims with the data, the base
    # model and the outputs and checkpoints, not the pods, not the network.
    for args in (
        ("get", "pvc", "-n", work.namespace),
        ("get", "pods", "-n", work.namespace),
        ("get", "configmap", work.config_map, "-n", work.namespace),
        ("delete", "networkpolicy", work.network_policy, "-n", work.namespace),
    ):
        refused(tenant(*args, check=False), "forbidden", what=" ".join(args))
    refused(tenant_apply(tenant, allow_all(work)), "forbidden", what="an allow-all NetworkPolicy")

    # A claim of their own bound to the domain's data volume: the volume is bound to the
    # domain's claim, so theirs never binds.
    data_pv = f"{work.namespace}-data"  # tests.support.objects.bound_claims
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "stolen", "namespace": ours},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": data_pv,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    tenant_apply(tenant, claim).check_returncode()
    bound = get(kubectl, "pv", data_pv)["spec"]["claimRef"]
    assert (bound["namespace"], bound["name"]) == (work.namespace, "data")
    assert get(kubectl, "pvc", "stolen", "-n", ours)["status"].get("phase") != "Bound"

    # A pod of their own labelled as the job's worker, on a node: not counted as the job's, and
    # the job's NetworkPolicy, in the workload namespace, selects only pods there.
    impostor = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "impostor",
            "namespace": ours,
            "labels": {
                "sealtune.dev/finetunejob": "kept",
                "sealtune.dev/finetunejob-namespace": ours,
                "sealtune.dev/finetunejob-uid": uid,
                "app.kubernetes.io/component": "worker",
            },
        },
        "spec": {
            **restricted_pod_spec(),
            "nodeName": "kwok-cpu-eu-west-1-0",
            "tolerations": [{"operator": "Exists"}],
        },
    }
    tenant_apply(tenant, impostor).check_returncode()
    wait_for(lambda: get(kubectl, "pod", "impostor", "-n", ours)["status"].get("phase") == "Running", 30)
    kubectl("annotate", "ftj", "kept", "-n", ours, f"nudge={uuid.uuid4().hex}")  # a reconcile
    wait_condition(kubectl, ours, "kept", "Running")
    status = get(kubectl, "ftj", "kept", "-n", ours)["status"]
    assert "kwok-cpu-eu-west-1-0" not in status.get("placement", {}).get("nodes", []), status
    policy = get(kubectl, "networkpolicy", work.network_policy, "-n", work.namespace)["spec"]
    peers = [p for rule in policy["ingress"] + policy["egress"] for p in rule.get("from", rule.get("to", []))]
    own = [
        p for p in peers if "sealtune.dev/finetunejob-uid" in p.get("podSelector", {}).get("matchLabels", {})
    ]
    assert own, policy
    for peer in own:
        assert "namespaceSelector" not in peer, "the job's peers reached outside the workload namespace"
    for peer in peers:  # and no other peer names the team's namespace
        assert ours not in json.dumps(peer.get("namespaceSelector", {})), peer


def test_a_status_naming_another_jobs_vault_objects_leaves_them_intact(
    vault_operator: OperatorProcess,
    cluster: LocalCluster,
    vault: hvac.Client,
    kubectl: Kubectl,
    teams: tuple[str, str],
    tenant: Tenant,
) -> None:
    ours, _ = teams
    domain = vaultdata.transit_domain(vault, kubectl, ours, checkpoints="1h")
    path, _ = vaultdata.write_secret(vault, ours, "token")
    for name in ("victim", "decoy"):
        job = secret_job(name, ours, domain, path, podMetadata=kwok_runtime(600))
        tenant_apply(tenant, job).check_returncode()
        wait_condition(kubectl, ours, name, "SecretsReady", reason="VaultRoleReady", timeout=60)
    victim = get(kubectl, "ftj", "victim", "-n", ours)["status"]["vault"]

    # The tenant may not write status at all...
    patch = json.dumps({"status": {"vault": victim}})
    refused(
        tenant(
            "patch",
            "ftj",
            "decoy",
            "-n",
            ours,
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
            check=False,
        ),
        "forbidden",
    )
    # ... an admin may; the decoy's status now names the victim's role, policy and key. Then the
    # decoy goes: its finalizer removes what is derived from its own uid, nothing else.
    kubectl("patch", "ftj", "decoy", "-n", ours, "--subresource=status", "--type=merge", "-p", patch)
    tenant("delete", "ftj", "decoy", "-n", ours, "--wait=false")
    wait_for(lambda: kubectl("get", "ftj", "decoy", "-n", ours, check=False).returncode != 0, 60)

    assert role_exists(vault, victim["role"])
    vault.sys.read_policy(victim["policy"])
    assert vault.secrets.transit.read_key(victim["dataKey"])["data"]["name"] == victim["dataKey"]
    work = workload_of(kubectl, ours, "victim")
    jwt = kubectl(
        "create", "token", work.service_account, "-n", work.namespace, "--audience", "vault"
    ).stdout.strip()
    assert login(cluster, victim["role"], jwt).is_authenticated()
