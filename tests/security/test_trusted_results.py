"""Trusted results, tried by the people around an artifact: the tenant who requested the job
(namespace `edit`), an approver holding the chart's approver role, and a user whom a careless
Role lets write ModelArtifacts. Each acts with a client certificate of the local PKI, through
kubectl or the `sealtune` CLI, and what they may not do is refused by the API server itself:
RBAC, and the admission policies of builders/result_admission.py, which hold while the operator
is down. See docs/threat-model.md for the promise each test proves."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sealtune import signing
from sealtune.builders.admission import JOB_POLICY, binding_name
from sealtune.names import ANNOTATION_REQUESTED_BY, LABEL_JOB, LABEL_JOB_NAMESPACE, LABEL_JOB_UID
from tests.conftest import Kubectl
from tests.support.artifacts import artifact_manifest, job_manifest, write_model
from tests.support.cluster import LocalCluster
from tests.support.identities import user_kubeconfig
from tests.support.kube import apply, get, wait_condition, wait_for, workload_of
from tests.support.objects import domain_with_claims, finetune_job
from tests.support.operator import OperatorProcess
from tests.support.tenancy import TENANT, refused

pytestmark = pytest.mark.security

APPROVER = "bob@approvers.example"
WRITER = "mallory@team-a.example"
SEALTUNE = Path(sys.executable).with_name("sealtune")
As = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def signer() -> signing.PemSigner:
    return signing.PemSigner(signing.new_private_key_pem())


@pytest.fixture
def people(
    cluster: LocalCluster,
    kubectl: Kubectl,
    teams: tuple[str, str],
    vault_operator: OperatorProcess,
    tmp_path: Path,
) -> Iterator[dict[str, Path]]:
    """Kubeconfigs of the tenant (who also holds the approver role: the self-approval rule, not
    RBAC, is what stops them), the approver, and the careless writer (a Role that grants
    get, create, update and patch on ModelArtifacts and their status). The operator running means
    its admission policies are installed."""
    ours, _ = teams
    for user in (TENANT, APPROVER):
        binding = f"approver-{user.split('@')[0]}"
        kubectl(
            "create",
            "rolebinding",
            binding,
            "--clusterrole=t-sealtune-approver",
            f"--user={user}",
            "-n",
            ours,
        )
    kubectl(
        "create", "role", "careless", "--verb=get,create,update,patch", "--resource=modelartifacts",
        "--resource=modelartifacts/status", "-n", ours,
    )  # fmt: skip
    kubectl("create", "rolebinding", "careless", "--role=careless", f"--user={WRITER}", "-n", ours)
    yield {user: user_kubeconfig(cluster, user, tmp_path / "people") for user in (TENANT, APPROVER, WRITER)}


def acting(people: dict[str, Path], kubectl: Kubectl) -> As:
    """kubectl as one of ``people``."""

    def run(user: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return kubectl("--kubeconfig", str(people[user]), *args, check=False, **kwargs)

    return run


def sealtune(people: dict[str, Path], user: str, *args: str | Path) -> tuple[int, dict[str, Any]]:
    """The `sealtune` CLI as ``user``, with -o json."""
    result = subprocess.run(
        [str(SEALTUNE), *map(str, args), "--kubeconfig", str(people[user]), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def published(
    kubectl: Kubectl, namespace: str, name: str, signer: signing.PemSigner, files: Path, **options: Any
) -> dict[str, Any]:
    """A Candidate as the operator publishes it for a job TENANT requested (made here by the
    cluster admin, whom admission trusts as the threat model does)."""
    job = job_manifest("tune", namespace)
    body = artifact_manifest(name, write_model(files), signer, job=job, requested_by=TENANT, **options)
    return json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(body)).stdout)


def promotion_patch(artifact: dict[str, Any], **promotion: Any) -> list[str]:
    """kubectl's arguments for a merge patch of the artifact's promotion (no resourceVersion:
    the operator writes the artifact's status meanwhile)."""
    patch = {"promotion": promotion}
    return ["patch", "modelartifact", artifact["metadata"]["name"], "-n", artifact["metadata"]["namespace"],
            "--type=merge", "--patch", json.dumps(patch)]  # fmt: skip


def approval(user: str) -> dict[str, str]:
    return {"approver": user, "approvedAt": "2026-12-07T12:00:00Z", "reason": "reviewed"}


def test_only_the_operator_publishes_artifacts_and_writes_their_status(
    kubectl: Kubectl,
    teams: tuple[str, str],
    people: dict[str, Path],
    signer: signing.PemSigner,
    tmp_path: Path,
) -> None:
    ours, _ = teams
    run = acting(people, kubectl)
    forged = artifact_manifest(
        "forged", write_model(tmp_path / "forged"), signer, job=job_manifest("tune", ours)
    )
    forged["promotion"] = {"stage": "Approved", "approvals": [approval(TENANT)]}
    refused(
        run(TENANT, "create", "-f", "-", input=json.dumps(forged)), "forbidden", what="the tenant's create"
    )
    refused(
        run(WRITER, "create", "-f", "-", input=json.dumps(forged)),
        "sealtune-artifacts/creator",
        "may not create ModelArtifacts",
        what="a create by a user RBAC lets",
    )

    artifact = published(kubectl, ours, "tune-v1", signer, tmp_path / "files")
    name = artifact["metadata"]["name"]
    spec = json.dumps({"spec": {"storage": {"claimName": "elsewhere", "path": "."}}})
    refused(
        run(WRITER, "patch", "modelartifact", name, "-n", ours, "--type=merge", "--patch", spec),
        "spec is immutable",
        what="a spec patch",
    )
    status = json.dumps(
        {"status": {"verification": {"verified": True, "verifiedAt": "2026-12-07T12:00:00Z"}}}
    )
    refused(
        run(WRITER, "patch", "modelartifact", name, "-n", ours, "--subresource=status", "--type=merge",
            "--patch", status),
        "sealtune-artifacts/status-writer",
        what="a status patch",
    )  # fmt: skip
    refused(
        run(WRITER, *promotion_patch(artifact, stage="Approved", approvals=[approval(WRITER)])),
        "sealtune-artifacts/approve-verb",
        "modelartifacts/promotion",
        what="an approval without the verb",
    )
    promotion = get(kubectl, "modelartifact", name, "-n", ours)["promotion"]
    assert promotion["stage"] == "Candidate" and not promotion.get("approvals")


def test_an_approval_is_the_requesting_users_and_never_the_requesters(
    kubectl: Kubectl,
    teams: tuple[str, str],
    people: dict[str, Path],
    signer: signing.PemSigner,
    tmp_path: Path,
) -> None:
    ours, _ = teams
    run = acting(people, kubectl)
    key = tmp_path / "key.pub"
    key.write_bytes(signer.public_key_pem)
    artifact = published(kubectl, ours, "tune-v1", signer, tmp_path / "files")

    # The tenant requested the job: holding the verb does not let them approve its artifact.
    code, document = sealtune(
        people, TENANT, "approve", "tune-v1", "-n", ours, "--reason", "mine", "--public-key", key
    )
    assert code == 3 and "sealtune-artifacts/no-self-approval" in document["error"], document
    # The approver cannot write someone else's name into the record.
    refused(
        run(
            APPROVER, *promotion_patch(artifact, stage="Approved", approvals=[approval("carol@example.com")])
        ),
        "sealtune-artifacts/approver-is-requester",
        what="an approval in another's name",
    )
    # The approver, through the CLI: recorded under the name the API server authenticated.
    code, document = sealtune(
        people, APPROVER, "approve", "tune-v1", "-n", ours, "--reason", "SEC-7", "--public-key", key
    )
    assert code == 0, document
    promotion = get(kubectl, "modelartifact", "tune-v1", "-n", ours)["promotion"]
    assert promotion["stage"] == "Approved"
    assert [(a["approver"], a["reason"]) for a in promotion["approvals"]] == [(APPROVER, "SEC-7")]

    # Revoking needs its verb too, and records its user.
    revoked = get(kubectl, "modelartifact", "tune-v1", "-n", ours)
    revocation = {"revoker": WRITER, "revokedAt": "2026-12-07T12:00:00Z", "reason": "no"}
    refused(
        run(WRITER, *promotion_patch(revoked, stage="Revoked", revocation=revocation)),
        "sealtune-artifacts/revoke-verb",
        what="a revocation without the verb",
    )
    code, document = sealtune(people, APPROVER, "revoke", "tune-v1", "-n", ours, "--reason", "leak")
    assert code == 0, document
    assert (
        get(kubectl, "modelartifact", "tune-v1", "-n", ours)["promotion"]["revocation"]["revoker"] == APPROVER
    )


def test_failed_gates_are_never_approved_and_self_approval_only_where_allowed(
    kubectl: Kubectl,
    teams: tuple[str, str],
    people: dict[str, Path],
    signer: signing.PemSigner,
    tmp_path: Path,
) -> None:
    ours, _ = teams
    run = acting(people, kubectl)
    gated = published(kubectl, ours, "gated-v1", signer, tmp_path / "gated", gates_passed=False)
    # Past the CLI's own check, straight at the API server.
    refused(
        run(APPROVER, *promotion_patch(gated, stage="Approved", approvals=[approval(APPROVER)])),
        "sealtune-artifacts/gates-passed",
        "EvalLoss",
        what="approving failed gates",
    )
    own = artifact_manifest(
        "own-v1", write_model(tmp_path / "own"), signer, job=job_manifest("tune", ours), requested_by=TENANT
    )
    own["spec"]["allowSelfApproval"] = True
    created = json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(own)).stdout)
    result = run(TENANT, *promotion_patch(created, stage="Approved", approvals=[approval(TENANT)]))
    assert result.returncode == 0, result.stderr


def test_a_job_records_who_requested_it_and_nobody_rewrites_that(
    kubectl: Kubectl, teams: tuple[str, str], people: dict[str, Path]
) -> None:
    ours, _ = teams
    run = acting(people, kubectl)
    apply(kubectl, *domain_with_claims(f"{ours}-d", ours))
    job = finetune_job("requested", ours, f"{ours}-d", scheduling={"suspend": True})
    created = run(TENANT, "create", "-f", "-", "-o", "json", input=json.dumps(job))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["metadata"]["annotations"][ANNOTATION_REQUESTED_BY] == TENANT

    impostor = finetune_job("impostor", ours, f"{ours}-d", scheduling={"suspend": True})
    impostor["metadata"]["annotations"] = {ANNOTATION_REQUESTED_BY: APPROVER}
    result = run(TENANT, "create", "-f", "-", input=json.dumps(impostor))
    assert result.returncode == 0, "the stamp replaces what the request said"
    stamped = get(kubectl, "ftj", "impostor", "-n", ours)["metadata"]["annotations"]
    assert stamped[ANNOTATION_REQUESTED_BY] == TENANT

    rewrite = json.dumps({"metadata": {"annotations": {ANNOTATION_REQUESTED_BY: APPROVER}}})
    refused(
        run(TENANT, "patch", "ftj", "requested", "-n", ours, "--type=merge", "--patch", rewrite),
        "sealtune-requester/unchanged",
        what="rewriting the requester",
    )


def test_a_record_copied_to_another_namespace_does_not_verify(
    kubectl: Kubectl,
    teams: tuple[str, str],
    people: dict[str, Path],
    signer: signing.PemSigner,
    tmp_path: Path,
) -> None:
    """A same-named artifact in another team's namespace, carrying team A's signed record
    (made by the cluster admin, who alone could): `sealtune verify` names the mismatch."""
    ours, theirs = teams
    key = tmp_path / "key.pub"
    key.write_bytes(signer.public_key_pem)
    honest = published(kubectl, ours, "tune-v1", signer, tmp_path / "files")
    copy = {k: honest[k] for k in ("apiVersion", "kind", "spec")}
    copy["metadata"] = {"name": "tune-v1", "namespace": theirs}
    kubectl("create", "-f", "-", input=json.dumps(copy))
    kubectl("create", "rolebinding", "reader", "--clusterrole=view", f"--user={APPROVER}", "-n", theirs)
    code, document = sealtune(people, APPROVER, "verify", "tune-v1", "-n", ours, "--public-key", key)
    assert code == 0, document
    code, document = sealtune(people, APPROVER, "verify", "tune-v1", "-n", theirs, "--public-key", key)
    assert code == 1, document
    problems = json.dumps(document)
    assert f"not '{theirs}/tune-v1'" in problems and "internalParameters.artifact" in problems


def test_a_batch_job_the_operator_did_not_create_is_never_adopted(
    kubectl: Kubectl,
    teams: tuple[str, str],
    people: dict[str, Path],
    vault_operator: OperatorProcess,
) -> None:
    """A Job with the FineTuneJob's derived name, labels and uid, made in the workload namespace
    while the operator was down, by a cluster admin who unbound the admission policy that
    refuses anyone but the operator: the job reports the conflict, and the Job is neither used
    nor changed, and no Vault role exists for it."""
    ours, _ = teams
    run = acting(people, kubectl)
    domain = f"{ours}-d"
    apply(kubectl, *domain_with_claims(domain, ours))
    wait_for(lambda: get(kubectl, "dd", domain).get("status", {}).get("phase") == "Ready", 30)
    vault_operator.stop()
    try:
        job = finetune_job("squatted", ours, domain, scheduling={"suspend": True})
        assert run(TENANT, "create", "-f", "-", input=json.dumps(job)).returncode == 0
        work = workload_of(kubectl, ours, "squatted")
        kubectl("delete", "validatingadmissionpolicybinding", binding_name(JOB_POLICY, domain))
        uid = get(kubectl, "ftj", "squatted", "-n", ours)["metadata"]["uid"]
        squatter = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": work.batch_job,
                "namespace": work.namespace,
                "labels": {LABEL_JOB: "squatted", LABEL_JOB_NAMESPACE: ours, LABEL_JOB_UID: uid},
            },
            "spec": {
                "suspend": True,
                "completionMode": "Indexed",
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "x"}]}
                },
            },
        }
        made = json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(squatter)).stdout)
    finally:
        vault_operator.start()  # binds the policy again, with the namespace
    blocked = wait_condition(
        kubectl, ours, "squatted", "PolicyAdmitted", "False", reason="WorkloadJobConflict"
    )
    assert work.batch_job in blocked["message"] and "did not create" in blocked["message"]
    status = get(kubectl, "ftj", "squatted", "-n", ours)["status"]
    assert status["phase"] == "Blocked" and "batchJobUID" not in status["workload"]
    after = get(kubectl, "job", work.batch_job, "-n", work.namespace)
    assert after["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"], "changed"
    assert kubectl(
        "get", "serviceaccount", work.service_account, "-n", work.namespace, check=False
    ).returncode
    get(kubectl, "validatingadmissionpolicybinding", binding_name(JOB_POLICY, domain))
