"""Trusted results, tried by the people around an artifact: the tenant who requested the job
(namespace `edit`), an approver holding the chart's approver role, and a user whom a careless
Role lets write ModelArtifacts. Each acts with a client certificate of the local PKI, through
kubectl or the `sealtune` CLI, and what they may not do is refused by the API server itself:
RBAC, and the admission policies of builders/result_admission.py, which hold while the operator
is down. See docs/threat-model.md for the promise each test proves."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
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
from tests.support.tools import sealtune

pytestmark = pytest.mark.security

APPROVER = "bob@approvers.example"
WRITER = "mallory@team-a.example"
RELEASER = "rita@deploy.example"
RELEASERS_GROUP = "deployers"


@dataclass
class Scene:
    """Team A's namespace (``ours``, where the tenant holds `edit`), another team's, the people
    acting there with their own client certificates, and a signer standing in for the
    operator's key (artifacts are made by the cluster admin, whom admission trusts as the threat
    model does)."""

    kubectl: Kubectl
    ours: str
    theirs: str
    people: dict[str, Path]
    signer: signing.PemSigner
    key: Path
    """The signer's public key, for `sealtune --public-key`."""
    scratch: Path

    def run(self, user: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """kubectl as ``user``."""
        return self.kubectl("--kubeconfig", str(self.people[user]), *args, check=False, **kwargs)

    def cli(self, user: str, *args: str | Path) -> tuple[int, dict[str, Any]]:
        """`sealtune` as ``user``."""
        return sealtune(*args, kubeconfig=self.people[user])

    def artifact(self, name: str, namespace: str | None = None, **options: Any) -> dict[str, Any]:
        """A ModelArtifact as the operator publishes it for a job TENANT requested."""
        job = job_manifest("tune", namespace or self.ours)
        files = write_model(self.scratch / name)
        return artifact_manifest(name, files, self.signer, job=job, requested_by=TENANT, **options)

    def published(self, name: str, **options: Any) -> dict[str, Any]:
        """That artifact, stored as a Candidate."""
        body = json.dumps(self.artifact(name, **options))
        return json.loads(self.kubectl("create", "-f", "-", "-o", "json", input=body).stdout)


@pytest.fixture
def scene(
    cluster: LocalCluster,
    kubectl: Kubectl,
    teams: tuple[str, str],
    vault_operator: OperatorProcess,
    tmp_path: Path,
) -> Scene:
    """The tenant also holds the approver role (the self-approval rule, not RBAC, is what stops
    them); the careless writer holds a Role that grants get, create, update and patch on
    ModelArtifacts and their status; the releaser (in group deployers) holds the releaser role.
    The operator running means its admission policies are in."""
    ours, theirs = teams
    for user in (TENANT, APPROVER):
        role = "--clusterrole=t-sealtune-approver"
        kubectl("create", "rolebinding", f"approver-{user.split('@')[0]}", role, f"--user={user}", "-n", ours)
    kubectl(
        "create", "role", "careless", "--verb=get,create,update,patch", "--resource=modelartifacts",
        "--resource=modelartifacts/status", "-n", ours,
    )  # fmt: skip
    kubectl("create", "rolebinding", "careless", "--role=careless", f"--user={WRITER}", "-n", ours)
    role = "--clusterrole=t-sealtune-releaser"
    kubectl("create", "rolebinding", "releaser", role, f"--user={RELEASER}", "-n", ours)
    people = {
        user: user_kubeconfig(cluster, user, tmp_path / "people") for user in (TENANT, APPROVER, WRITER)
    }
    people[RELEASER] = user_kubeconfig(cluster, RELEASER, tmp_path / "people", groups=(RELEASERS_GROUP,))
    signer = signing.PemSigner(signing.new_private_key_pem())
    key = tmp_path / "key.pub"
    key.write_bytes(signer.public_key_pem)
    return Scene(kubectl, ours, theirs, people, signer, key, tmp_path)


def promotion_patch(artifact: dict[str, Any], **promotion: Any) -> list[str]:
    """kubectl's arguments for a merge patch of the artifact's promotion (no resourceVersion:
    the operator writes the artifact's status meanwhile)."""
    patch = {"promotion": promotion}
    return ["patch", "modelartifact", artifact["metadata"]["name"], "-n", artifact["metadata"]["namespace"],
            "--type=merge", "--patch", json.dumps(patch)]  # fmt: skip


def approval(user: str) -> dict[str, str]:
    return {"approver": user, "approvedAt": "2026-12-07T12:00:00Z", "reason": "reviewed"}


def test_only_the_operator_publishes_artifacts_and_writes_their_status(scene: Scene) -> None:
    ours, run, kubectl = scene.ours, scene.run, scene.kubectl
    forged = scene.artifact("forged")
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

    artifact = scene.published("tune-v1")
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


def test_an_approval_is_the_requesting_users_and_never_the_requesters(scene: Scene) -> None:
    ours, run, kubectl = scene.ours, scene.run, scene.kubectl
    artifact = scene.published("tune-v1")

    # The tenant requested the job: holding the verb does not let them approve its artifact.
    code, document = scene.cli(
        TENANT, "approve", "tune-v1", "-n", ours, "--reason", "mine", "--public-key", scene.key
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
    code, document = scene.cli(
        APPROVER, "approve", "tune-v1", "-n", ours, "--reason", "SEC-7", "--public-key", scene.key
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
    code, document = scene.cli(APPROVER, "revoke", "tune-v1", "-n", ours, "--reason", "leak")
    assert code == 0, document
    assert (
        get(kubectl, "modelartifact", "tune-v1", "-n", ours)["promotion"]["revocation"]["revoker"] == APPROVER
    )


def test_failed_gates_are_never_approved_and_self_approval_only_where_allowed(scene: Scene) -> None:
    run, kubectl = scene.run, scene.kubectl
    gated = scene.published("gated-v1", gates_passed=False)
    # Past the CLI's own check, straight at the API server.
    refused(
        run(APPROVER, *promotion_patch(gated, stage="Approved", approvals=[approval(APPROVER)])),
        "sealtune-artifacts/gates-passed",
        "EvalLoss",
        what="approving failed gates",
    )
    own = scene.artifact("own-v1")
    own["spec"]["allowSelfApproval"] = True
    created = json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(own)).stdout)
    result = run(TENANT, *promotion_patch(created, stage="Approved", approvals=[approval(TENANT)]))
    assert result.returncode == 0, result.stderr


def release_request(requester: str, *groups: str) -> dict[str, Any]:
    return {
        "destination": "serving",
        "requester": requester,
        "groups": list(groups or (RELEASERS_GROUP, "system:authenticated")),
        "requestedAt": "2026-12-07T12:00:00Z",
        "reason": "deploy",
    }


def test_weights_leave_the_domain_only_as_its_rule_says(
    scene: Scene, vault_operator: OperatorProcess
) -> None:
    """Who may ask is the API server's to check (RBAC and admission, under the asker's own name);
    whether the files may go is the operator's, under the DataDomain's spec.release: never by
    default, then only in the stages and to the destinations and groups it names, and only
    for an artifact that verifies with the operator's key. Each decision is in the audit log."""
    ours, run, kubectl = scene.ours, scene.run, scene.kubectl
    domain = f"{ours}-r"
    apply(kubectl, *domain_with_claims(domain, ours))
    uid = get(kubectl, "datadomain", domain)["metadata"]["uid"]
    files = write_model(scene.scratch / "tune-v1")
    body = artifact_manifest(
        "tune-v1", files, scene.signer, job=job_manifest("tune", ours, domain=domain), requested_by=TENANT,
        domain_uid=uid,
    )  # fmt: skip
    artifact = json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(body)).stdout)

    def export(user: str, destination: str = "serving") -> tuple[int, dict[str, Any]]:
        return scene.cli(
            user,
            "export",
            "tune-v1",
            "-n",
            ours,
            "--to",
            destination,
            "--reason",
            "deploy",
            "--timeout",
            "90",
        )

    # Asking needs the verb release, under one's own name and groups.
    code, document = export(TENANT)
    assert code == 3 and "sealtune-artifacts/release-verb" in document["error"], document
    refused(
        run(WRITER, *promotion_patch(artifact, releases=[release_request(WRITER, "system:authenticated")])),
        "sealtune-artifacts/release-verb",
        what="a request without the verb",
    )
    refused(
        run(RELEASER, *promotion_patch(artifact, releases=[release_request(APPROVER)])),
        "sealtune-artifacts/releaser-is-requester",
        what="a request in another's name",
    )
    refused(
        run(RELEASER, *promotion_patch(artifact, releases=[release_request(RELEASER, "auditors")])),
        "sealtune-artifacts/releaser-is-requester",
        what="a request claiming groups the user is not in",
    )

    # The domain keeps its weights by default: the releaser's own request is refused.
    code, document = export(RELEASER)
    assert code == 1 and (document["phase"], document["reason"]) == ("Refused", "ReleaseForbidden"), document
    rule = {
        "stages": ["Approved"],
        "destinations": [
            {"name": "serving", "claimName": "outputs", "path": "releases", "namespaces": [ours]},
            {"name": "auditors-only", "claimName": "outputs", "path": "audit", "groups": ["auditors"]},
        ],
    }
    kubectl("patch", "datadomain", domain, "--type=merge", "--patch", json.dumps({"spec": {"release": rule}}))
    code, document = export(RELEASER)
    assert code == 1 and document["reason"] == "StageNotReleased" and "Candidate" in document["message"]
    code, document = scene.cli(
        APPROVER, "approve", "tune-v1", "-n", ours, "--reason", "SEC-9", "--public-key", scene.key
    )
    assert code == 0, document
    assert export(RELEASER, "elsewhere")[1]["reason"] == "UnknownDestination"
    assert export(RELEASER, "auditors-only")[1]["reason"] == "GroupNotAllowed"
    # Approved and allowed, but signed by a key that is not the operator's: nothing leaves.
    code, document = export(RELEASER)
    assert code == 1 and document["reason"] == "NotVerified", document

    reasons = ["ReleaseForbidden", "StageNotReleased", "UnknownDestination", "GroupNotAllowed", "NotVerified"]
    stored = get(kubectl, "modelartifact", "tune-v1", "-n", ours)
    assert [r["requester"] for r in stored["promotion"]["releases"]] == [RELEASER] * 5
    assert [(o["phase"], o["reason"]) for o in stored["status"]["releases"]] == [
        ("Refused", r) for r in reasons
    ]
    jobs = kubectl(
        "get", "jobs", "-A", "-l", f"sealtune.dev/release-of={stored['metadata']['uid']}", "-o", "name"
    )
    assert jobs.stdout.strip() == "", "no release pod ran"
    audit = [json.loads(line) for line in vault_operator.audit_path.read_text().splitlines()]
    decided = [
        e["details"]
        for e in audit
        if e["event"] == "Release" and e["subject"]["uid"] == stored["metadata"]["uid"]
    ]
    assert [(d["decision"], d["why"], d["requester"]) for d in decided] == [
        ("Refused", r, RELEASER) for r in reasons
    ]
    assert all(d["groups"] == [RELEASERS_GROUP, "system:authenticated"] for d in decided)


def test_a_job_records_who_requested_it_and_nobody_rewrites_that(scene: Scene) -> None:
    ours, run, kubectl = scene.ours, scene.run, scene.kubectl
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


def test_a_record_copied_to_another_namespace_does_not_verify(scene: Scene) -> None:
    """A same-named artifact in another team's namespace, carrying team A's signed record
    (made by the cluster admin, who alone could): `sealtune verify` names the mismatch."""
    ours, theirs, kubectl = scene.ours, scene.theirs, scene.kubectl
    honest = scene.published("tune-v1")
    copy = {k: honest[k] for k in ("apiVersion", "kind", "spec")}
    copy["metadata"] = {"name": "tune-v1", "namespace": theirs}
    kubectl("create", "-f", "-", input=json.dumps(copy))
    kubectl("create", "rolebinding", "reader", "--clusterrole=view", f"--user={APPROVER}", "-n", theirs)
    code, document = scene.cli(APPROVER, "verify", "tune-v1", "-n", ours, "--public-key", scene.key)
    assert code == 0, document
    code, document = scene.cli(APPROVER, "verify", "tune-v1", "-n", theirs, "--public-key", scene.key)
    assert code == 1, document
    problems = json.dumps(document)
    assert f"not '{theirs}/tune-v1'" in problems and "internalParameters.artifact" in problems


def test_a_batch_job_the_operator_did_not_create_is_never_adopted(
    scene: Scene, vault_operator: OperatorProcess
) -> None:
    """A Job with the FineTuneJob's derived name, labels and uid, made in the workload namespace
    while the operator was down, by a cluster admin who unbound the admission policy that
    refuses anyone but the operator: the job reports the conflict, and the Job is neither used
    nor changed, and no Vault role exists for it."""
    ours, run, kubectl = scene.ours, scene.run, scene.kubectl
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
    after = get(kubectl, "job", work.batch_job, "-n", work.namespace, "--show-managed-fields")
    assert after["metadata"]["generation"] == made["metadata"]["generation"], "its spec changed"
    writers = {e["manager"] for e in after["metadata"]["managedFields"] if not e.get("subresource")}
    assert "sealtune-operator" not in writers and after["metadata"].get("annotations") == made[
        "metadata"
    ].get("annotations")
    assert kubectl(
        "get", "serviceaccount", work.service_account, "-n", work.namespace, check=False
    ).returncode
    get(kubectl, "validatingadmissionpolicybinding", binding_name(JOB_POLICY, domain))
