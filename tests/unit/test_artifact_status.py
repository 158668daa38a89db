"""A ModelArtifact's status: the operator's own check of its signature, file list and
provenance, written once per generation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealtune import signing
from sealtune.artifacts import verified_status
from tests.support.artifacts import artifact_manifest, job_manifest, write_model

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def stored(name: str, signer: signing.PemSigner, files: Path) -> dict[str, Any]:
    body = artifact_manifest(name, write_model(files), signer, job=job_manifest("tune", "team-a"))
    body["metadata"].update(uid="a-uid", generation=2, resourceVersion="7")
    return body


def test_an_honest_artifact_is_verified_and_a_copied_bundle_is_not(tmp_path: Path) -> None:
    signer = signing.PemSigner(signing.new_private_key_pem())
    honest = stored("tune-v1", signer, tmp_path / "a")
    status = verified_status(honest, signer.key_id, signer.public_key_pem, NOW)
    assert status["phase"] == "Verified" and status["observedGeneration"] == 2
    assert status["verification"]["verified"] is True
    (verified,) = status["conditions"]
    assert (verified["type"], verified["status"], verified["reason"]) == (
        "Verified",
        "True",
        "SignatureValid",
    )
    assert verified["observedGeneration"] == 2

    other = stored("other-v1", signer, tmp_path / "b")
    other["spec"]["signature"] = honest["spec"]["signature"]
    status = verified_status(other, signer.key_id, signer.public_key_pem, NOW)
    assert status["phase"] == "VerificationFailed"
    assert status["conditions"][0]["reason"] == "SignatureInvalid"
    assert "tune-v1" in status["verification"]["message"]


def test_an_artifact_signed_by_another_key_is_not_the_operators(tmp_path: Path) -> None:
    signer, stranger = (signing.PemSigner(signing.new_private_key_pem()) for _ in range(2))
    body = stored("tune-v1", stranger, tmp_path / "a")
    status = verified_status(body, signer.key_id, signer.public_key_pem, NOW)
    assert status["conditions"][0]["reason"] == "KeyUnknown"
    assert status["verification"]["verified"] is False
