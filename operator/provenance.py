"""Provenance of a ModelArtifact: an in-toto statement with an SLSA v1 provenance predicate.

Pure functions: the publication step passes the FineTuneJob and what it observed of the run,
and gets the JSON for ModelArtifact.spec.provenance; ``inconsistencies`` checks such a
statement against the rest of an artifact's spec, and the readers below serve ``sealtune
lineage``. SLSA's fields, as sealtune fills them:

- subject: the artifact's namespace/name and its manifest digest (spec.digests.manifest);
- buildDefinition: buildType ``BUILD_TYPE``; externalParameters, the FineTuneJob's spec as
  the API server stored it (the hyperparameters); internalParameters, the artifact's identity
  (namespace, name, the uids of job and domain, the requester), every file digest and the
  evaluation with each gate's outcome; resolvedDependencies, the base model, the data set (the
  digest the trainer read) and every container image by the digest the kubelet ran;
- runDetails: the builder (the sealtune operator and its version) and, as its
  builderDependencies, the nodes and the RuntimeClass: they do not shape the weights but they
  are what the confidentiality guarantee rests on; metadata, the job's uid, start and finish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sealtune import __version__
from sealtune.api.v1alpha1.finetunejob import FineTuneJob
from sealtune.api.v1alpha1.modelartifact import ArtifactSource, Evaluation, FileDigest, ModelArtifactSpec

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://sealtune.dev/FineTuneJob/v1alpha1"
BUILDER_ID_PREFIX = "https://sealtune.dev/operator@"

BASE_MODEL = "baseModel"
DATA_SET = "dataSet"
IMAGE_PREFIX = "image:"
NODE = "node"
RUNTIME_CLASS = "runtimeClass"


@dataclass(frozen=True)
class Image:
    """A container image of the run, pinned by the digest the kubelet reported (the pod's
    status.containerStatuses[].imageID), not by its tag."""

    container: str
    reference: str
    digest: str
    """``sha256:<hex>``."""


@dataclass(frozen=True)
class Run:
    """What the operator observed of the run."""

    nodes: Sequence[str]
    runtime_class_name: str | None
    started_at: datetime
    finished_at: datetime
    images: Sequence[Image]


def internal_parameters(
    namespace: str,
    name: str,
    *,
    source: ArtifactSource,
    evaluation: Evaluation,
    files: Sequence[FileDigest],
    allow_self_approval: bool,
) -> dict[str, Any]:
    """What the signature binds besides SLSA's own fields: the artifact's identity (namespace,
    name, the uids of its job and domain, who requested the job), every file digest and the
    evaluation with each gate's outcome, as the artifact's spec states them."""
    return {
        "artifact": {"namespace": namespace, "name": name},
        "source": source.to_json(),
        "allowSelfApproval": allow_self_approval,
        "evaluation": evaluation.to_json(),
        "files": [f.to_json() for f in files],
    }


def subject_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def statement(
    *,
    artifact_name: str,
    manifest_digest: str,
    job: FineTuneJob,
    data_digest: str,
    run: Run,
    workload_namespace: str,
    internal: Mapping[str, Any],
    version: str = __version__,
) -> dict[str, Any]:
    """The provenance statement of the artifact ``artifact_name`` built by ``job``, which ran (and
    found its base model's claim) in ``workload_namespace``; ``internal`` from
    ``internal_parameters``."""
    namespace = job.metadata.get("namespace", "")
    base = job.spec.base_model
    base_uri = f"pvc://{workload_namespace}/{base.pvc.claim_name}/{base.pvc.path}"
    dependencies = [
        _descriptor(BASE_MODEL, base_uri, base.digest),
        _descriptor(DATA_SET, f"k8s://sealtune.dev/datadomains/{job.spec.domain_ref.name}", data_digest),
        *(
            _descriptor(IMAGE_PREFIX + image.container, f"oci://{image.reference}", image.digest)
            for image in sorted(run.images, key=lambda i: i.container)
        ),
    ]
    platform = [{"name": NODE, "uri": f"k8s://nodes/{node}"} for node in sorted(set(run.nodes))]
    if run.runtime_class_name:
        platform.append(
            {"name": RUNTIME_CLASS, "uri": f"k8s://node.k8s.io/runtimeclasses/{run.runtime_class_name}"}
        )
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name(namespace, artifact_name), "digest": _digest(manifest_digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": job.spec.to_json(),
                "internalParameters": dict(internal),
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID_PREFIX + version,
                    "version": {"sealtune-operator": version},
                    "builderDependencies": platform,
                },
                "metadata": {
                    "invocationId": job.metadata.get("uid", ""),
                    "startedOn": _time(run.started_at),
                    "finishedOn": _time(run.finished_at),
                },
            },
        },
    }


def inconsistencies(
    provenance: Mapping[str, Any], *, namespace: str, name: str, spec: ModelArtifactSpec
) -> list[str]:
    """Every way the statement disagrees with the artifact it sits in; empty if none."""
    problems = []
    if provenance.get("_type") != STATEMENT_TYPE:
        problems.append(f"_type is {provenance.get('_type')!r}, expected {STATEMENT_TYPE}")
    if provenance.get("predicateType") != PREDICATE_TYPE:
        problems.append(f"predicateType is {provenance.get('predicateType')!r}, expected {PREDICATE_TYPE}")
    subject = [{"name": subject_name(namespace, name), "digest": _digest(spec.digests.manifest)}]
    if provenance.get("subject") != subject:
        problems.append("subject is not the artifact's namespace, name and manifest digest")
    build = _get(provenance, "predicate", "buildDefinition")
    internal = build.get("internalParameters")
    bound = internal_parameters(
        namespace,
        name,
        source=spec.source,
        evaluation=spec.evaluation,
        files=spec.digests.files,
        allow_self_approval=spec.allow_self_approval,
    )
    for part, value in bound.items():
        if not isinstance(internal, Mapping) or internal.get(part) != value:
            problems.append(f"internalParameters.{part} is not this artifact's")
    if build.get("buildType") != BUILD_TYPE:
        problems.append(f"buildType is {build.get('buildType')!r}, expected {BUILD_TYPE}")
    builder_id = _get(provenance, "predicate", "runDetails", "builder").get("id")
    if not (isinstance(builder_id, str) and builder_id.startswith(BUILDER_ID_PREFIX)):
        problems.append(f"builder id {builder_id!r} is not the sealtune operator")
    for role, expected in ((BASE_MODEL, spec.digests.base_model), (DATA_SET, spec.digests.data_set)):
        found = dependency(provenance, role)
        if found is None or found.get("digest") != _digest(expected):
            problems.append(f"resolvedDependencies {role} is not {expected}")
    parameters = build.get("externalParameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    hyperparameters = spec.hyperparameters.to_json()
    for field in ("method", "training", "resources"):
        if parameters.get(field) != hyperparameters.get(field):
            problems.append(f"externalParameters.{field} differs from spec.hyperparameters.{field}")
    if _get(parameters, "domainRef").get("name") != spec.source.domain.name:
        problems.append("externalParameters.domainRef is not spec.source.domain")
    if _get(provenance, "predicate", "runDetails", "metadata").get("invocationId") != spec.source.job.uid:
        problems.append("runDetails.metadata.invocationId is not the uid of spec.source.job")
    return problems


def dependency(provenance: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The resolved dependency called ``name``, if any."""
    return next((d for d in dependencies(provenance) if d.get("name") == name), None)


def dependencies(provenance: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = _get(provenance, "predicate", "buildDefinition").get("resolvedDependencies")
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def placement(provenance: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """The nodes and the RuntimeClass the run used, as recorded."""
    found = _get(provenance, "predicate", "runDetails", "builder").get("builderDependencies")
    platform = [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []
    nodes = [str(d.get("uri", "")).rsplit("/", 1)[-1] for d in platform if d.get("name") == NODE]
    classes = [str(d.get("uri", "")).rsplit("/", 1)[-1] for d in platform if d.get("name") == RUNTIME_CLASS]
    return nodes, (classes[0] if classes else None)


def run_times(provenance: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """When the run started and finished, as recorded (RFC 3339)."""
    metadata = _get(provenance, "predicate", "runDetails", "metadata")
    return metadata.get("startedOn"), metadata.get("finishedOn")


def _descriptor(name: str, uri: str, digest: str) -> dict[str, Any]:
    return {"name": name, "uri": uri, "digest": _digest(digest)}


def _digest(digest: str) -> dict[str, str]:
    """``sha256:<hex>`` as an in-toto DigestSet."""
    algorithm, _, value = digest.partition(":")
    return {algorithm: value}


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(document: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    """The mapping at ``keys``, or an empty one: provenance is free-form JSON."""
    for key in keys:
        value = document.get(key)
        document = value if isinstance(value, Mapping) else {}
    return document
