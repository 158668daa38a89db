"""Publication of a succeeded job: its trainer's result is checked, the digests it reports are
signed (the operator never reads the weights), and the ModelArtifact is written with its
provenance. Pure builders first, then the Publisher that talks to the API and the signer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import gates, provenance, signing, threads
from .adapters.kube import ApiError, KubeClient
from .api.v1alpha1 import DataDomain, FineTuneJob
from .api.v1alpha1.conditions import JobConditionType as T
from .api.v1alpha1.conditions import PublishedReason as R
from .api.v1alpha1.modelartifact import ArtifactSource, Evaluation, FileDigest, Hyperparameters, Signature
from .builders.meta import workload_of
from .keys import OperatorKeys
from .names import ANNOTATION_REQUESTED_BY
from .observe import PodObservation
from .settings import Settings
from .status import Cond, result_summary

log = logging.getLogger(__name__)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class NotPublishable(Exception):
    """The result cannot be signed; ``reason`` is a Published reason. Permanent."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def checked_files(job: FineTuneJob, domain: DataDomain, result: Mapping[str, Any]) -> list[FileDigest]:
    """The files to sign, after the result agrees with what the job was meant to do."""
    if not result.get("ok"):
        raise NotPublishable(R.RESULT_INVALID, "the trainer's result does not report success")
    expected = domain.spec.source.manifest_digest
    if result.get("dataDigest") != expected:
        raise NotPublishable(
            R.RESULT_INVALID,
            f"the trainer read data with digest {result.get('dataDigest')}, not the domain's {expected}",
        )
    if not str(result.get("manifestDigest", "")).startswith("sha256:"):
        raise NotPublishable(R.RESULT_INVALID, "the trainer's result has no manifest digest")
    try:
        files = [FileDigest.model_validate(f) for f in result.get("files") or []]
    except ValueError:
        raise NotPublishable(R.RESULT_INVALID, "the trainer's file list is malformed") from None
    if not files:
        raise NotPublishable(R.RESULT_INVALID, "the trainer's result lists no output files")
    return files


def auto_approval(
    domain: DataDomain, outcomes: Sequence[Mapping[str, Any]], approver: str, now: datetime
) -> dict[str, Any] | None:
    """The approval the operator appends, as ``approver`` (its own user name: admission refuses
    any other), when every gate passed and the domain approves automatically; else None."""
    if not (domain.spec.auto_approve and all(o["passed"] for o in outcomes)):
        return None
    return {
        "approver": approver,
        "approvedAt": now.strftime(TIME_FORMAT),
        "reason": f"every gate passed ({', '.join(o['name'] for o in outcomes)}) "
        "and the domain approves automatically",
    }


def model_artifact(
    job: FineTuneJob,
    domain: DataDomain,
    *,
    result: Mapping[str, Any],
    files: Sequence[FileDigest],
    signature: Signature,
    run: provenance.Run,
    now: datetime,
    name: str | None = None,
) -> dict[str, Any]:
    """The ModelArtifact of a succeeded job (immutable spec, starting promotion), named after
    the job unless ``name`` says otherwise. Its files are where the trainer wrote them."""
    job_name, namespace = job.metadata["name"], job.metadata["namespace"]
    name = name or job_name
    output = job.spec.output.storage
    run_dir = workload_of(job, domain).output_dir
    storage_path = run_dir if output.path in (".", "") else f"{output.path}/{run_dir}"
    outcomes = gates.judge(job, result)
    summary = {**result_summary(dict(result)), "gates": outcomes}
    source: dict[str, Any] = {
        "job": {"name": job_name, "uid": job.metadata["uid"]},
        "domain": {"name": domain.metadata["name"], "uid": domain.metadata.get("uid", "")},
        **({"requestedBy": requested_by} if (requested_by := requester(job)) else {}),
    }
    evaluation = {"results": summary, "passed": not gates.failed(outcomes)}
    internal = provenance.internal_parameters(
        namespace,
        name,
        source=ArtifactSource.model_validate(source),
        evaluation=Evaluation.model_validate(evaluation),
        files=files,
        allow_self_approval=domain.spec.allow_self_approval,
    )
    hyperparameters = Hyperparameters(
        method=job.spec.method,
        training=job.spec.training,
        resources=job.spec.resources,
        deepspeed=job.spec.deepspeed,
        differential_privacy=job.spec.privacy.differential_privacy,
    )
    statement = provenance.statement(
        artifact_name=name,
        manifest_digest=result["manifestDigest"],
        job=job,
        data_digest=result["dataDigest"],
        run=run,
        workload_namespace=workload_of(job, domain).namespace,
        internal=internal,
    )
    return {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "ModelArtifact",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"sealtune.dev/finetunejob": job_name, "sealtune.dev/domain": domain.metadata["name"]},
        },
        "spec": {
            "source": source,
            "storage": {"claimName": output.claim_name, "path": storage_path},
            "digests": {
                "baseModel": job.spec.base_model.digest,
                "dataSet": result["dataDigest"],
                "manifest": result["manifestDigest"],
                "files": [f.to_json() for f in files],
            },
            "hyperparameters": hyperparameters.to_json(),
            "evaluation": evaluation,
            "provenance": statement,
            "signature": signature.to_json(),
            "retention": {
                "keepFor": domain.spec.retention.artifacts,
                "pinWhileApproved": domain.spec.retention.pin_approved_artifacts,
            },
            "allowSelfApproval": domain.spec.allow_self_approval,
        },
        "promotion": {"stage": "Candidate"},
    }


def sign_provenance(body: dict[str, Any], signer: signing.KeySigner) -> None:
    """Adds the signed statement to ``body``, a ModelArtifact from ``model_artifact``."""
    body["spec"]["signature"]["provenance"] = signing.sign_statement(body["spec"]["provenance"], signer)


def requester(job: FineTuneJob) -> str | None:
    """Who created the job, as admission stamped it (builders/result_admission.py)."""
    return (job.metadata.get("annotations") or {}).get(ANNOTATION_REQUESTED_BY) or None


def run_of(pods: Sequence[PodObservation], status: Mapping[str, Any], settings: Settings) -> provenance.Run:
    """Where and when the job ran, from its pods and status (nodes, RuntimeClass, image digest)."""
    timestamps = status.get("timestamps") or {}
    now = datetime.now(UTC).strftime(TIME_FORMAT)
    started = str(status.get("startTime") or timestamps.get("admittedAt") or now)
    finished = str(status.get("completionTime") or timestamps.get("finishedAt") or now)
    images = sorted({(p.image or settings.trainer_image, p.image_id) for p in pods if p.image_id})
    return provenance.Run(
        nodes=sorted({p.node_name for p in pods if p.node_name}),
        runtime_class_name=next((p.runtime_class for p in pods if p.runtime_class), None),
        started_at=datetime.strptime(started, TIME_FORMAT).replace(tzinfo=UTC),
        finished_at=datetime.strptime(finished, TIME_FORMAT).replace(tzinfo=UTC),
        images=[provenance.Image("trainer", ref, _digest(image_id)) for ref, image_id in images],
    )


def _digest(image_id: str) -> str:
    """``sha256:...`` from a container status' imageID (``docker.io/x@sha256:...`` or bare)."""
    return "sha256:" + image_id.rsplit("sha256:", 1)[-1]


@dataclass
class Publisher:
    settings: Settings
    kube: KubeClient
    keys: OperatorKeys
    approver: str = ""
    """The operator's own user name, which auto-approvals carry; empty approves nothing."""

    async def publish(
        self,
        job: FineTuneJob,
        domain: DataDomain,
        result: Mapping[str, Any],
        pods: Sequence[PodObservation],
        status: Mapping[str, Any],
    ) -> tuple[Cond, dict[str, str] | None]:
        """Signs and writes the artifact. Returns the Published condition and the artifactRef.
        Raises signing.SigningError or ApiError (retried) when the signer or the API fails."""
        try:
            files = checked_files(job, domain, result)
        except NotPublishable as refusal:
            return Cond(T.PUBLISHED, False, refusal.reason, str(refusal)), None
        now = datetime.now(UTC)
        name, namespace = job.spec.output.artifact_name or job.metadata["name"], job.metadata["namespace"]
        signer = await self.keys.signer()
        signature = await threads.run_in(
            threads.SIGNING, signing.sign_files, files, signer, name=provenance.subject_name(namespace, name)
        )
        body = model_artifact(
            job,
            domain,
            result=result,
            files=files,
            signature=signature,
            run=run_of(pods, status, self.settings),
            now=now,
            name=name,
        )
        await threads.run_in(threads.SIGNING, sign_provenance, body, signer)
        try:
            created = await self.kube.create(body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            created = await self.kube.get("ModelArtifact", name, namespace) or {}
            source = ((created.get("spec") or {}).get("source") or {}).get("job") or {}
            if source.get("uid") != job.metadata["uid"]:
                message = (
                    f"ModelArtifact {name} exists and belongs to another job; delete it or choose "
                    "another spec.output.artifactName"
                )
                return Cond(T.PUBLISHED, False, R.ARTIFACT_NAME_TAKEN, message), None
        outcomes = body["spec"]["evaluation"]["results"]["gates"]
        stage = await self._approve(created, domain, outcomes, now)
        ref = {"name": name, "uid": created["metadata"]["uid"]}
        failed = gates.failed(outcomes)
        if failed:
            message = (
                f"ModelArtifact {name} signed with {signer.key_id} as a Candidate that cannot be "
                f"approved: gates {', '.join(failed)} failed"
            )
            return Cond(T.PUBLISHED, True, R.GATES_FAILED, message), ref
        message = f"ModelArtifact {name} signed with {signer.key_id}; stage {stage}"
        return Cond(T.PUBLISHED, True, R.ARTIFACT_PUBLISHED, message), ref

    async def _approve(
        self,
        artifact: Mapping[str, Any],
        domain: DataDomain,
        outcomes: Sequence[Mapping[str, Any]],
        now: datetime,
    ) -> str:
        """Appends the operator's approval where the domain approves automatically (an artifact
        is always created a Candidate); returns the stage."""
        promotion = artifact.get("promotion") or {}
        stage = str(promotion.get("stage", "Candidate"))
        approval = auto_approval(domain, outcomes, self.approver, now) if self.approver else None
        if stage != "Candidate" or approval is None:
            return stage
        meta = artifact["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "promotion": {"stage": "Approved", "approvals": [*promotion.get("approvals", []), approval]},
        }
        try:
            await self.kube.merge_patch("ModelArtifact", meta["name"], meta["namespace"], patch)
        except ApiError as refusal:
            if refusal.status not in (403, 422):
                raise
            # Admission's answer does not change on retry (e.g. the operator requested the job).
            log.warning("auto-approval of ModelArtifact %s refused: %s", meta["name"], refusal)
            return stage
        return "Approved"
