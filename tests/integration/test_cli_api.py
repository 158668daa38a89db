"""``sealtune`` against the real API server with the generated CRDs: verify and lineage
of stored ModelArtifacts, and approve and revoke through the API server's stage rules."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealtune import cli, signing
from tests.conftest import Kubectl
from tests.support.artifacts import (
    NODE,
    RUNTIME_CLASS,
    artifact_manifest,
    flip_byte,
    job_manifest,
    write_model,
)
from tests.support.objects import data_domain

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signer() -> signing.PemSigner:
    return signing.PemSigner(signing.new_private_key_pem())


@pytest.fixture(scope="module")
def key_namespace(kubectl: Kubectl, crds_installed: None, signer: signing.PemSigner) -> Iterator[str]:
    """An operator namespace of this module's own, publishing the signer's public key."""
    name = f"cli-keys-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": signing.PUBLIC_KEY_CONFIGMAP, "namespace": name},
        "data": {signing.PUBLIC_KEY_ENTRY: signer.public_key_pem.decode()},
    }
    kubectl("create", "-f", "-", input=json.dumps(configmap))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


class Sealtune:
    """Runs the CLI in-process against the test cluster, in one namespace, with -o json."""

    def __init__(
        self, kubeconfig: str, namespace: str, key_namespace: str, capsys: pytest.CaptureFixture[str]
    ):
        self.key_namespace = key_namespace
        self.common = ["--kubeconfig", kubeconfig, "-n", namespace, "--operator-namespace", key_namespace]
        self.capsys = capsys

    def __call__(self, verb: str, *argv: str | Path) -> tuple[int, dict[str, Any]]:
        # Options given here come after the defaults, so they win.
        code = cli.main([verb, *self.common, *map(str, argv), "-o", "json"])
        document = json.loads(self.capsys.readouterr().out)
        assert document["exitCode"] == code
        return code, document


@pytest.fixture
def sealtune(
    kubeconfig: str, namespace: str, key_namespace: str, capsys: pytest.CaptureFixture[str]
) -> Sealtune:
    return Sealtune(kubeconfig, namespace, key_namespace, capsys)


def create(kubectl: Kubectl, manifest: dict[str, Any]) -> dict[str, Any]:
    # JSON, not YAML: PyYAML writes "2e-4" bare, and kubectl's YAML reader takes it for a number.
    return json.loads(kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout)


def stored(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "modelartifact", name, "-n", namespace, "-o", "json").stdout)


def publish(
    kubectl: Kubectl, namespace: str, name: str, files: Path, signer: signing.KeySigner, **options: Any
) -> dict[str, Any]:
    job = options.pop("job", None) or job_manifest("tune", namespace)
    return create(kubectl, artifact_manifest(name, files, signer, job=job, **options))


def test_verify_by_name_with_the_published_key(
    sealtune: Sealtune, kubectl: Kubectl, namespace: str, signer: signing.PemSigner, tmp_path: Path
) -> None:
    files = write_model(tmp_path / "files")
    publish(kubectl, namespace, "tune-v1", files, signer)

    code, document = sealtune("verify", "tune-v1")
    assert code == cli.EXIT_OK, document
    assert document["artifact"] == f"{namespace}/tune-v1"
    assert document["keyID"] == signer.key_id
    assert document["files"]["checked"] is False

    code, document = sealtune("verify", "tune-v1", "--files", files)
    assert code == cli.EXIT_OK, document
    assert document["files"] == {"checked": True, "ok": True, "problems": [], "count": 3}

    flip_byte(files / "adapter_model.safetensors", 1000)
    code, document = sealtune("verify", "tune-v1", "--files", files)
    assert code == cli.EXIT_FAILED
    assert document["signature"]["ok"] and document["provenance"]["ok"]
    [problem] = document["files"]["problems"]
    assert problem.endswith("adapter_model.safetensors: content differs from the signed sha256")


def test_an_artifact_signed_by_another_key_is_refused(
    sealtune: Sealtune, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    intruder = signing.PemSigner(signing.new_private_key_pem())
    files = write_model(tmp_path / "files")
    publish(kubectl, namespace, "forged-v1", files, intruder)
    code, document = sealtune("verify", "forged-v1", "--files", files)
    assert code == cli.EXIT_FAILED
    assert "Key mismatch" in document["signature"]["problems"][0]
    assert document["files"]["checked"] is False
    code, document = sealtune("approve", "forged-v1", "--reason", "looks fine")
    assert code == cli.EXIT_FAILED and document["approved"] is False
    assert stored(kubectl, namespace, "forged-v1")["promotion"]["stage"] == "Candidate"


def test_missing_artifact_and_missing_key_exit_2(
    sealtune: Sealtune, kubectl: Kubectl, namespace: str, signer: signing.PemSigner, tmp_path: Path
) -> None:
    code, document = sealtune("verify", "absent")
    assert code == cli.EXIT_USAGE
    assert document["error"] == f"modelartifact {namespace}/absent not found"
    publish(kubectl, namespace, "tune-v1", write_model(tmp_path / "files"), signer)
    code, document = sealtune("verify", "tune-v1", "--operator-namespace", namespace)
    assert code == cli.EXIT_USAGE
    assert document["error"].startswith(
        f"no public key: configmap {namespace}/sealtune-signing-key not found"
    )


def test_lineage_with_the_jobs_deletion_receipts(
    sealtune: Sealtune, kubectl: Kubectl, namespace: str, signer: signing.PemSigner, tmp_path: Path
) -> None:
    domain = f"cli-{uuid.uuid4().hex[:8]}"
    create(kubectl, data_domain(domain, namespace))
    try:
        manifest = job_manifest("tune", namespace, domain=domain)
        del manifest["metadata"]["uid"]
        job = create(kubectl, manifest)
        status = {
            "deletions": [
                {
                    "target": "checkpoints",
                    "dueAt": "2025-07-07T11:45:00Z",
                    "deletedAt": "2025-07-07T11:46:02Z",
                },
                {"target": "logs", "dueAt": "2025-07-30T11:45:00Z"},
            ],
            "deletionReceipts": [
                {
                    "kind": "PersistentVolumeClaim",
                    "name": "tune-checkpoints",
                    "uid": "5e5e5e5e-0000-4000-8000-000000000003",
                    "deletedAt": "2025-07-07T11:46:02Z",
                    "policy": "retention.checkpoints=168h",
                    "verification": "GET returned 404",
                }
            ],
        }
        kubectl(
            "patch",
            "finetunejob",
            "tune",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
        publish(kubectl, namespace, "tune-v1", write_model(tmp_path / "files"), signer, job=job)

        code, document = sealtune("lineage", "tune-v1")
        assert code == cli.EXIT_OK, document
        assert document["job"] == {"name": "tune", "uid": job["metadata"]["uid"], "note": "found"}
        assert document["domain"]["name"] == domain
        assert document["nodes"] == [NODE]
        assert document["runtimeClassName"] == RUNTIME_CLASS
        assert document["deletionReceipts"] == status["deletionReceipts"]
        assert [d["target"] for d in document["deletions"]] == ["checkpoints", "logs"]
        assert document["promotion"]["stage"] == "Candidate"

        kubectl("delete", "finetunejob", "tune", "-n", namespace)
        code, document = sealtune("lineage", "tune-v1")
        assert code == cli.EXIT_OK
        assert document["job"]["note"].startswith("the job no longer exists")
        assert document["deletionReceipts"] == []
    finally:
        kubectl("delete", "datadomain", domain, "--wait=false", check=False)


def test_approve_then_revoke(
    sealtune: Sealtune, kubectl: Kubectl, namespace: str, signer: signing.PemSigner, tmp_path: Path
) -> None:
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]["username"]
    publish(kubectl, namespace, "tune-v1", write_model(tmp_path / "files"), signer)
    code, document = sealtune("approve", "tune-v1", "--reason", "x" * 1025)
    assert code == cli.EXIT_USAGE and document["error"].startswith("reason:")

    code, document = sealtune("approve", "tune-v1", "--reason", "Reviewed evaluation, ticket SEC-1")
    assert code == cli.EXIT_OK, document
    promotion = stored(kubectl, namespace, "tune-v1")["promotion"]
    assert promotion["stage"] == "Approved"
    assert [(a["approver"], a["reason"]) for a in promotion["approvals"]] == [
        (whoami, "Reviewed evaluation, ticket SEC-1")
    ]

    code, document = sealtune("approve", "tune-v1", "--reason", "Second review")
    assert code == cli.EXIT_OK, document
    approvals = stored(kubectl, namespace, "tune-v1")["promotion"]["approvals"]
    assert [a["approver"] for a in approvals] == [whoami, whoami]

    code, document = sealtune("revoke", "tune-v1", "--reason", "Leaked a canary in red-team review")
    assert code == cli.EXIT_OK, document
    promotion = stored(kubectl, namespace, "tune-v1")["promotion"]
    assert promotion["stage"] == "Revoked"
    assert promotion["revocation"]["revoker"] == whoami
    assert promotion["approvals"] == approvals

    code, document = sealtune("approve", "tune-v1", "--reason", "again")
    assert code == cli.EXIT_API and "Revoked, which is final" in document["error"]
    code, document = sealtune("revoke", "tune-v1", "--reason", "again")
    assert code == cli.EXIT_API and "already revoked" in document["error"]


def test_a_candidate_may_be_revoked_but_not_approved_past_failed_gates(
    sealtune: Sealtune, kubectl: Kubectl, namespace: str, signer: signing.PemSigner, tmp_path: Path
) -> None:
    publish(kubectl, namespace, "gated-v1", write_model(tmp_path / "files"), signer, gates_passed=False)
    code, document = sealtune("approve", "gated-v1", "--reason", "ship it")
    assert code == cli.EXIT_FAILED
    assert document["error"] == "not approved: evaluation gates failed (EvalLoss)"
    assert stored(kubectl, namespace, "gated-v1")["promotion"]["stage"] == "Candidate"
    code, document = sealtune("revoke", "gated-v1", "--reason", "failed its gates")
    assert code == cli.EXIT_OK, document
    assert stored(kubectl, namespace, "gated-v1")["promotion"]["stage"] == "Revoked"


def test_the_api_servers_refusals_exit_3(
    sealtune: Sealtune,
    kubectl: Kubectl,
    namespace: str,
    signer: signing.PemSigner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(kubectl, namespace, "tune-v1", write_model(tmp_path / "files"), signer)
    assert sealtune("revoke", "tune-v1", "--reason", "withdrawn")[0] == cli.EXIT_OK
    read = cli.Context.artifact

    def as_if_candidate(ctx: cli.Context, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The CLI's own check skipped, so that the CEL rule on the API server is what refuses."""
        artifact, raw = read(ctx, **kwargs)
        return artifact, {**raw, "promotion": {"stage": "Candidate"}}

    monkeypatch.setattr(cli.Context, "artifact", as_if_candidate)
    code, document = sealtune("approve", "tune-v1", "--reason", "undo")
    assert code == cli.EXIT_API
    assert "promotion is final once promotion.stage is Revoked" in document["error"]

    def stale(ctx: cli.Context, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        artifact, raw = as_if_candidate(ctx, **kwargs)
        return artifact, {**raw, "metadata": {**raw["metadata"], "resourceVersion": "1"}}

    monkeypatch.setattr(cli.Context, "artifact", stale)
    code, document = sealtune("revoke", "tune-v1", "--reason", "again")
    assert code == cli.EXIT_API
    assert "kept changing" in document["error"]
