"""ModelArtifact: the signed result of a FineTuneJob and its promotion through stages.

Immutability: everything that was signed or measured is in ``spec``, and ``spec`` as a whole
is immutable (``self == oldSelf``), so an artifact's record cannot be edited after the fact.
The one thing that must change over an artifact's life, its stage and the approvals that move
it, lives beside spec in ``promotion``, guarded by CEL transition rules: Candidate -> Approved
-> Revoked or Candidate -> Revoked, approvals append-only, Revoked final. Keeping it out of
status matters: status is the operator's observation and may be rebuilt; an approval is a
person's decision and must be kept.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import AGE, KindInfo, KubeModel, KubeResource, PrinterColumn, Rule, immutable, list_map
from .finetunejob import (
    DeepSpeedSpec,
    DifferentialPrivacy,
    MethodSpec,
    Resources,
    TrainingResult,
    TrainingSpec,
)
from .meta import Condition, UIDReference, VolumePath, conditions_field
from .scalars import Digest, DNSLabel, Duration, RelativePath, Time, UserGroup

Stage = Literal["Candidate", "Approved", "Revoked"]


class ArtifactSource(KubeModel):
    """Lineage: the job that produced the artifact and the domain whose data it saw."""

    job: UIDReference
    """The FineTuneJob (same namespace). Required."""

    domain: UIDReference
    """The DataDomain. Required."""

    requested_by: str | None = Field(None, max_length=256)
    """The user who created the FineTuneJob (its sealtune.dev/requested-by annotation, which
    admission stamps and keeps). That user may not approve the artifact unless
    spec.allowSelfApproval. Optional; unset when unknown, and then only self-approval admits
    an approval."""


class FileDigest(KubeModel):
    """One output file and its digest, as listed in the signed manifest."""

    path: RelativePath
    """Path relative to the artifact's root: no '..', not absolute, not hidden. Required."""

    sha256: str = Field(max_length=64, pattern=r"^[a-f0-9]{64}$")
    """sha256 of the file's content, 64 lowercase hex digits. Required."""

    size: int = Field(ge=0, le=1 << 50)
    """Size in bytes. Required."""


class Digests(KubeModel):
    """Content digests tying the artifact to its inputs and its files."""

    base_model: Digest
    """The base model's manifest digest. Required."""

    data_set: Digest
    """The training data's manifest digest, as the trainer read it. Required."""

    manifest: Digest
    """Digest of the signed manifest (the file list below, canonically serialised). Required."""

    files: list[FileDigest] = Field(min_length=1, max_length=256)
    """Every output file, none left out; an empty artifact is refused. Required."""


class Hyperparameters(KubeModel):
    """The job's settings that shaped the weights, copied from its spec."""

    method: MethodSpec
    """Fine-tuning method. Required."""

    training: TrainingSpec
    """Training schedule and hyperparameters. Required."""

    resources: Resources
    """Workers and GPUs (the effective batch depends on them). Required."""

    deepspeed: DeepSpeedSpec | None = None
    """DeepSpeed settings, when used. Optional."""

    differential_privacy: DifferentialPrivacy | None = None
    """DP-SGD settings, when used. Optional."""


class Evaluation(KubeModel):
    """Measured quality and privacy of the artifact, and the gates applied."""

    results: TrainingResult
    """Metrics and gate outcomes reported by the trainer and verified by the operator. Required."""

    passed: bool
    """Whether every gate passed. Required."""


class Signature(KubeModel):
    """The signatures: over the files, in the OpenSSF model_signing format, and over the
    provenance statement."""

    bundle: str = Field(min_length=1, max_length=65_536)
    """The model_signing (Sigstore) bundle, JSON text. Required."""

    key_id: str = Field(max_length=256)
    """Identifies the signer's key: a Vault transit key and version, or the local key's
    fingerprint. Required."""

    algorithm: Literal["ecdsa-p256-sha256"] = "ecdsa-p256-sha256"
    """Signature algorithm. Optional; defaults to ecdsa-p256-sha256."""

    signed_at: Time
    """When the manifest was signed. Required."""

    provenance: str | None = Field(None, min_length=1, max_length=262_144)
    """spec.provenance signed with the same key: a DSSE envelope (JSON text) around the in-toto
    statement, which binds the artifact's namespace, name, job and domain uids, every file
    digest, the data, base-model and image digests, the nodes and RuntimeClass, the
    hyperparameters and each gate's outcome. The operator always writes it; verification fails
    without it. Optional only in the schema, so that the files' signature stands alone."""


class ArtifactRetention(KubeModel):
    """How long the artifact may live, fixed from its domain's retention when it was written."""

    keep_for: Duration
    """Duration after creation when the artifact and its files are deleted, e.g. 8760h. Required."""

    pin_while_approved: bool = True
    """Keep it past keepFor while its stage is Approved. Optional; defaults to true."""


class ModelArtifactSpec(KubeModel):
    """The signed record of a model: immutable once written."""

    source: ArtifactSource
    """Lineage: job and domain. Required."""

    storage: VolumePath
    """Claim and directory holding the files. Required."""

    digests: Digests
    """Digests of inputs, files and manifest. Required."""

    hyperparameters: Hyperparameters
    """Settings that shaped the weights. Required."""

    evaluation: Evaluation
    """Measured quality and privacy, and gate outcomes. Required."""

    provenance: dict[str, Any]
    """An in-toto statement with an SLSA v1 provenance predicate: builder, external parameters
    (the job's spec), resolved dependencies (base model, data set, images) and run details.
    Required; free-form JSON."""

    signature: Signature
    """The signature over the manifest. Required."""

    retention: ArtifactRetention
    """When the artifact is deleted. Required."""

    allow_self_approval: bool = False
    """Whether the job's requester may approve it: the DataDomain's spec.allowSelfApproval when
    the artifact was published. Optional; defaults to false."""


class Approval(KubeModel):
    """A person's (or the operator's, for auto-approval) decision to approve the artifact."""

    approver: str = Field(min_length=1, max_length=256)
    """Who approved: the user name the API server authenticated for the request that added the
    approval (admission refuses any other), system:serviceaccount:... for the operator. Required."""

    approved_at: Time
    """When. Required."""

    reason: str = Field(min_length=1, max_length=1024)
    """Why, e.g. the review or ticket. Required."""


class Revocation(KubeModel):
    """The decision to withdraw the artifact; final."""

    revoker: str = Field(min_length=1, max_length=256)
    """Who revoked it. Required."""

    revoked_at: Time
    """When. Required."""

    reason: str = Field(min_length=1, max_length=1024)
    """Why. Required."""


class ReleaseRequest(KubeModel):
    """A request for the artifact's files, decided by the operator under its domain's
    spec.release (the outcome is in status.releases, at the same index)."""

    destination: DNSLabel
    """One of the domain's spec.release.destinations, by name. Required."""

    requester: str = Field(min_length=1, max_length=256)
    """Who asks: the user name the API server authenticated for the request that added it
    (admission refuses any other). Required."""

    groups: list[UserGroup] = Field(default_factory=list, max_length=64)
    """That user's groups, as the API server authenticated them (admission refuses any
    other list); the domain may require one. Optional."""

    requested_at: Time
    """When. Required."""

    reason: str = Field(min_length=1, max_length=1024)
    """Why, e.g. the deployment or ticket. Required."""


class Promotion(KubeModel):
    """The artifact's stage and the decisions that moved it there."""

    RULES = (
        Rule(
            "self.stage != 'Approved' || (has(self.approvals) && size(self.approvals) > 0)",
            "promotion.approvals needs an entry when promotion.stage is Approved",
            lambda p: p.stage != "Approved" or len(p.approvals) > 0,
        ),
        Rule(
            "(self.stage == 'Revoked') == has(self.revocation)",
            "promotion.revocation is required when promotion.stage is Revoked, and forbidden otherwise",
            lambda p: (p.stage == "Revoked") == (p.revocation is not None),
        ),
    )

    stage: Stage = Field(
        "Candidate",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf || (oldSelf == 'Candidate' && self != 'Candidate') "
                    "|| (oldSelf == 'Approved' && self == 'Revoked')",
                    "message": "promotion.stage may only move Candidate to Approved, Approved to "
                    "Revoked, or Candidate to Revoked",
                }
            ]
        },
    )
    """Candidate (new; usable by nobody), Approved (usable as a base model and for deployment)
    or Revoked (withdrawn, final). Moves only Candidate -> Approved -> Revoked or Candidate ->
    Revoked. Optional; defaults to Candidate."""

    approvals: list[Approval] = Field(default_factory=list, max_length=16)
    """Approvals, oldest first; append-only. Optional."""

    revocation: Revocation | None = None
    """The revocation. Required when stage is Revoked, forbidden otherwise."""

    releases: list[ReleaseRequest] = Field(
        default_factory=list, max_length=64, json_schema_extra=list_map("requester", "requestedAt")
    )
    """Requests for the files, oldest first; append-only, one per requester and second
    (sealtune export). Optional."""


class Verification(KubeModel):
    """The operator's latest check of signature and digests."""

    verified: bool
    """Whether the signature and every file digest checked out. Required."""

    verified_at: Time
    """When the check ran. Required."""

    message: str = Field("", max_length=1024)
    """What failed, when something did. Optional."""


ReleasePhase = Literal["Released", "Refused", "Failed"]


class ReleaseOutcome(KubeModel):
    """The operator's decision on one release request, and what its release pod did."""

    index: int = Field(ge=0, le=63)
    """The request's position in promotion.releases. Required."""

    phase: ReleasePhase
    """Released (the files and the signature bundle are at path, each rehashed on the way),
    Refused (the domain's rule forbids it; nothing was copied) or Failed (allowed, but the copy
    did not complete; nothing is left at path). Required."""

    reason: str = Field(max_length=128)
    """A CamelCase reason. Required."""

    message: str = Field("", max_length=1024)
    """For people. Optional."""

    claim_name: str | None = Field(None, max_length=253)
    """The destination claim, in the domain's workload namespace. Optional."""

    path: str | None = Field(None, max_length=1024)
    """The released directory in that claim. Optional."""

    files: int | None = Field(None, ge=0)
    """How many files were copied, the signature bundle not counted. Optional."""

    bytes: int | None = Field(None, ge=0)
    """How many bytes. Optional."""

    decided_at: Time
    """When the outcome was written. Required."""


ArtifactPhase = Literal["Pending", "Verified", "VerificationFailed"]


class ModelArtifactStatus(KubeModel):
    """What the operator observed about the artifact."""

    phase: ArtifactPhase | None = None
    """A one-word summary for printing; read conditions to act. Optional."""

    observed_generation: int | None = Field(None, ge=0)
    """The metadata.generation this status describes. Optional."""

    conditions: list[Condition] = conditions_field("Types: Verified.")

    verification: Verification | None = None
    """The latest verification. Optional."""

    releases: list[ReleaseOutcome] = Field(
        default_factory=list, max_length=64, json_schema_extra=list_map("index")
    )
    """The outcome of each release request that has one. Optional."""


class ModelArtifact(KubeResource):
    """A signed fine-tuned model: digests of every file and input, evaluation, provenance and
    signature (immutable), and its promotion stage."""

    KIND = KindInfo(
        kind="ModelArtifact",
        plural="modelartifacts",
        short_names=("ma",),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("Stage", ".promotion.stage", "string", "Candidate, Approved or Revoked."),
            PrinterColumn(
                "Verified", ".status.verification.verified", "boolean", "Whether the signature checked out."
            ),
            PrinterColumn(
                "Job", ".spec.source.job.name", "string", "The FineTuneJob that produced it.", priority=1
            ),
            AGE,
        ),
        selectable_fields=(".promotion.stage",),
    )

    kind: Literal["ModelArtifact"] = "ModelArtifact"
    """Kind of the object: ModelArtifact."""

    spec: ModelArtifactSpec = Field(json_schema_extra=immutable("spec"))
    """The signed record. Required; immutable."""

    promotion: Promotion = Field(
        default_factory=Promotion,
        # Transition rules: only the API server sees the old object, so they have no Python side.
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "oldSelf.stage != 'Revoked' || self == oldSelf",
                    "message": "promotion is final once promotion.stage is Revoked",
                },
                {
                    "rule": "!has(oldSelf.approvals) || "
                    "(has(self.approvals) && oldSelf.approvals.all(a, a in self.approvals))",
                    "message": "promotion.approvals is append-only: existing approvals cannot "
                    "change or be removed",
                },
                {
                    "rule": "!has(oldSelf.releases) || (has(self.releases) && "
                    "size(self.releases) >= size(oldSelf.releases) && "
                    "oldSelf.releases.all(r, self.releases.indexOf(r) == oldSelf.releases.indexOf(r)))",
                    "message": "promotion.releases is append-only: existing requests cannot "
                    "change, move or be removed",
                },
            ]
        },
    )
    """Stage and approvals: the only part of an artifact that changes. Optional; defaults to
    stage Candidate."""

    status: ModelArtifactStatus | None = None
    """What the operator observed. Written by the operator."""
