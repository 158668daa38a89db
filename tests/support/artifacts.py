"""Signed ModelArtifacts for tests: files on disk, and the artifact the publication step would
write for them, with consistent digests, hyperparameters, provenance and signature."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealtune import provenance, publication, signing
from sealtune.api.v1alpha1 import DataDomain, FineTuneJob, ModelArtifact
from sealtune.api.v1alpha1.modelartifact import FileDigest
from sealtune.names import ANNOTATION_REQUESTED_BY
from sealtune_trainer import manifest
from tests.support.objects import data_domain, finetune_job

DATA_DIGEST = "sha256:" + "da" * 32
TRAINER_IMAGE = provenance.Image("trainer", "sealtune-trainer:dev", "sha256:" + "cd" * 32)
RUNTIME_CLASS = "kata-qemu-nvidia-gpu-tdx"
NODE = "real-cc-gpu-0"
MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


def write_model(root: Path) -> Path:
    """A small adapter directory, one file in a subdirectory."""
    (root / "tokenizer").mkdir(parents=True)
    (root / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}\n')
    (root / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (root / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "BPE"}}\n')
    return root


def file_digests(root: Path) -> list[FileDigest]:
    """What the trainer reports for the files under ``root``."""
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    entries = manifest.build(root, paths)["files"]
    return [FileDigest(path=e["path"], sha256=e["sha256"], size=e["size"]) for e in entries]


def job_manifest(
    name: str,
    namespace: str,
    *,
    domain: str = "crown-jewels",
    uid: str = "0b0c0d0e-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """A suspended FineTuneJob with a uid, as the API server would return it."""
    job = finetune_job(name, namespace, domain, scheduling={"suspend": True})
    job["metadata"]["uid"] = uid
    return job


def artifact_manifest(
    name: str,
    files: Path,
    signer: signing.KeySigner,
    *,
    job: dict[str, Any],
    gates_passed: bool = True,
    requested_by: str = "alice@example.com",
    domain_uid: str = "0d0d0d0d-0000-4000-8000-000000000002",
) -> dict[str, Any]:
    """The ModelArtifact the publication step writes for the files under ``files``, produced
    by ``job`` (a FineTuneJob manifest with metadata.uid, which ``requested_by`` created) and
    signed by ``signer``. Its one threshold, maxEvalLoss, holds or not as ``gates_passed`` says."""
    job = copy.deepcopy(job)
    job["metadata"].setdefault("annotations", {})[ANNOTATION_REQUESTED_BY] = requested_by
    job["spec"].setdefault("evaluation", {})["maxEvalLoss"] = 2.5 if gates_passed else 1.0
    source = FineTuneJob.model_validate(job)
    digests = file_digests(files)
    manifest_digest = manifest.digest_of({"version": 1, "files": [d.to_json() for d in digests]})
    run = provenance.Run(
        nodes=(NODE,),
        runtime_class_name=RUNTIME_CLASS,
        started_at=datetime(2025, 6, 30, 11, 0, tzinfo=UTC),
        finished_at=datetime(2025, 6, 30, 11, 45, tzinfo=UTC),
        images=(TRAINER_IMAGE,),
    )
    result = {
        "ok": True,
        "steps": 10,
        "finalLoss": 1.2,
        "evalLoss": 1.5,
        "dataDigest": DATA_DIGEST,
        "manifestDigest": manifest_digest,
        "gatesPassed": True,  # the trainer's claim, which the operator does not believe
        "gates": [{"name": "WeightsChanged", "passed": True, "value": True, "threshold": True}],
    }
    domain = DataDomain.model_validate(
        data_domain(
            source.spec.domain_ref.name, source.metadata["namespace"], retention={"artifacts": "720h"}
        )
    )
    domain.metadata["uid"] = domain_uid
    artifact = publication.model_artifact(
        source,
        domain,
        result=result,
        files=digests,
        signature=signing.sign_files(
            digests, signer, name=provenance.subject_name(source.metadata["namespace"], name)
        ),
        run=run,
        now=datetime(2025, 6, 30, 11, 46, tzinfo=UTC),
        name=name,
    )
    publication.sign_provenance(artifact, signer)
    del artifact["promotion"]
    ModelArtifact.model_validate(artifact)
    return artifact


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def model_signing_verify(directory: Path, bundle: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    """The OpenSSF reference verifier, as a user would run it."""
    return subprocess.run(
        [
            str(MODEL_SIGNING),
            "verify",
            "key",
            str(directory),
            "--signature",
            str(bundle),
            "--public_key",
            str(public_key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
