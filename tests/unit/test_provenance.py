"""The provenance statement: SLSA v1 shape, what goes where, the readers ``sealtune lineage``
uses, and each inconsistency with the rest of an artifact that ``sealtune verify`` reports."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sealtune import __version__, provenance, signing
from sealtune.api.v1alpha1 import FineTuneJob, ModelArtifact
from tests.support.artifacts import DATA_DIGEST, artifact_manifest, job_manifest, write_model
from tests.support.objects import DIGEST

pytestmark = pytest.mark.unit

MANIFEST = "sha256:" + "12" * 32
IMAGES = (
    provenance.Image("vault-init", "sealtune-trainer:dev", "sha256:" + "ee" * 32),
    provenance.Image("trainer", "sealtune-trainer:dev", "sha256:" + "cd" * 32),
)
RUN = provenance.Run(
    nodes=("gpu-b", "gpu-a", "gpu-b"),
    runtime_class_name="kata-qemu-nvidia-gpu-tdx",
    started_at=datetime(2025, 6, 30, 13, 0, tzinfo=timezone(timedelta(hours=2))),
    finished_at=datetime(2025, 6, 30, 11, 45, 30, tzinfo=UTC),
    images=IMAGES,
)


INTERNAL = {"artifact": {"namespace": "team-a", "name": "tune-v1"}}


def job(base_model: dict[str, Any] | None = None) -> FineTuneJob:
    manifest = job_manifest("tune", "team-a")
    if base_model is not None:
        manifest["spec"]["baseModel"] = base_model
    return FineTuneJob.model_validate(manifest)


def statement(source: FineTuneJob | None = None, run: provenance.Run = RUN) -> dict[str, Any]:
    return provenance.statement(
        artifact_name="tune-v1",
        manifest_digest=MANIFEST,
        job=source or job(),
        data_digest=DATA_DIGEST,
        run=run,
        workload_namespace="sealtune-d",
        internal=INTERNAL,
    )


def test_statement_is_an_slsa_v1_provenance() -> None:
    source = job()
    found = statement(source)
    assert found["_type"] == "https://in-toto.io/Statement/v1"
    assert found["predicateType"] == "https://slsa.dev/provenance/v1"
    assert found["subject"] == [{"name": "team-a/tune-v1", "digest": {"sha256": "12" * 32}}]
    build = found["predicate"]["buildDefinition"]
    assert build["buildType"] == provenance.BUILD_TYPE
    assert build["externalParameters"] == source.spec.to_json()
    assert build["internalParameters"] == INTERNAL
    assert build["resolvedDependencies"] == [
        {
            "name": "baseModel",
            "uri": "pvc://sealtune-d/models/.",
            "digest": {"sha256": DIGEST.removeprefix("sha256:")},
        },
        {
            "name": "dataSet",
            "uri": "k8s://sealtune.dev/datadomains/crown-jewels",
            "digest": {"sha256": "da" * 32},
        },
        {"name": "image:trainer", "uri": "oci://sealtune-trainer:dev", "digest": {"sha256": "cd" * 32}},
        {"name": "image:vault-init", "uri": "oci://sealtune-trainer:dev", "digest": {"sha256": "ee" * 32}},
    ]
    run = found["predicate"]["runDetails"]
    assert run["builder"]["id"] == f"https://sealtune.dev/operator@{__version__}"
    assert run["builder"]["version"] == {"sealtune-operator": __version__}
    assert run["metadata"] == {
        "invocationId": source.metadata["uid"],
        "startedOn": "2025-06-30T11:00:00Z",
        "finishedOn": "2025-06-30T11:45:30Z",
    }


def test_placement_and_times_read_back() -> None:
    found = statement()
    assert provenance.placement(found) == (["gpu-a", "gpu-b"], "kata-qemu-nvidia-gpu-tdx")
    assert provenance.run_times(found) == ("2025-06-30T11:00:00Z", "2025-06-30T11:45:30Z")
    plain = statement(run=provenance.Run((), None, RUN.started_at, RUN.finished_at, ()))
    assert provenance.placement(plain) == ([], None)
    assert [d["name"] for d in provenance.dependencies(plain)] == ["baseModel", "dataSet"]
    assert provenance.placement({}) == ([], None)
    assert provenance.dependency({"predicate": "not a map"}, "baseModel") is None


def test_the_version_is_the_builders() -> None:
    found = provenance.statement(
        artifact_name="a",
        manifest_digest=MANIFEST,
        job=job(),
        data_digest=DATA_DIGEST,
        run=RUN,
        workload_namespace="sealtune-d",
        internal=INTERNAL,
        version="9.9.9",
    )
    assert found["predicate"]["runDetails"]["builder"]["id"] == "https://sealtune.dev/operator@9.9.9"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    files = write_model(tmp_path_factory.mktemp("prov") / "model")
    signer = signing.PemSigner(signing.new_private_key_pem())
    return ModelArtifact.model_validate(
        artifact_manifest("tune-v1", files, signer, job=job_manifest("tune", "team-a"))
    )


def _change(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return changed


def test_a_consistent_statement_has_no_inconsistencies(artifact: ModelArtifact) -> None:
    meta = artifact.metadata
    found = provenance.inconsistencies(
        artifact.spec.provenance, namespace=meta["namespace"], name=meta["name"], spec=artifact.spec
    )
    assert found == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("_type", "https://in-toto.io/Statement/v0.1", "_type"),
        ("predicateType", "https://slsa.dev/provenance/v0.2", "predicateType"),
        ("subject.0.digest.sha256", "00" * 32, "subject"),
        ("subject.0.name", "other", "subject"),
        ("predicate.buildDefinition.buildType", "https://example.com/other", "buildType"),
        ("predicate.runDetails.builder.id", "https://example.com/ci", "builder id"),
        ("predicate.buildDefinition.resolvedDependencies.0.digest.sha256", "00" * 32, "baseModel"),
        ("predicate.buildDefinition.resolvedDependencies.1.digest.sha256", "00" * 32, "dataSet"),
        ("predicate.buildDefinition.externalParameters.method.lora.r", 64, "externalParameters.method"),
        ("predicate.buildDefinition.externalParameters.training.maxSteps", 99, "externalParameters.training"),
        ("predicate.buildDefinition.externalParameters.resources.workers", 2, "externalParameters.resources"),
        ("predicate.buildDefinition.externalParameters.domainRef.name", "other", "domainRef"),
        ("predicate.runDetails.metadata.invocationId", "another-uid", "invocationId"),
        ("predicate", None, "buildType"),
        (
            "predicate.buildDefinition.internalParameters.artifact.namespace",
            "team-b",
            "internalParameters.artifact",
        ),
        (
            "predicate.buildDefinition.internalParameters.source.job.uid",
            "another-uid",
            "internalParameters.source",
        ),
        (
            "predicate.buildDefinition.internalParameters.evaluation.passed",
            False,
            "internalParameters.evaluation",
        ),
        (
            "predicate.buildDefinition.internalParameters.files.0.sha256",
            "00" * 32,
            "internalParameters.files",
        ),
        (
            "predicate.buildDefinition.internalParameters.allowSelfApproval",
            True,
            "internalParameters.allowSelf",
        ),
    ],
)
def test_each_inconsistency_is_reported(artifact: ModelArtifact, path: str, value: Any, problem: str) -> None:
    changed = _change(artifact.spec.provenance, path, value)
    meta = artifact.metadata
    problems = provenance.inconsistencies(
        changed, namespace=meta["namespace"], name=meta["name"], spec=artifact.spec
    )
    assert any(problem in p for p in problems), problems


def test_check_artifact_reports_provenance_and_result_digests(
    artifact: ModelArtifact, tmp_path: Path
) -> None:
    changed = artifact.model_copy(deep=True)
    changed.spec.provenance = _change(artifact.spec.provenance, "subject.0.name", "other")
    changed.spec.evaluation.results.data_digest = "sha256:" + "00" * 32
    changed.spec.evaluation.results.manifest_digest = "sha256:" + "00" * 32
    key = signing.PemSigner(signing.new_private_key_pem()).public_key_pem
    check = signing.check_artifact(changed, key)
    assert check.signature  # another key
    assert "subject is not the artifact's namespace, name and manifest digest" in check.provenance
    assert "evaluation.results.dataDigest is not spec.digests.dataSet" in check.provenance
    assert "evaluation.results.manifestDigest is not spec.digests.manifest" in check.provenance
