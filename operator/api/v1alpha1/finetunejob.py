"""FineTuneJob: one training run on one DataDomain's data."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from .base import AGE, LIST_SET, KindInfo, KubeModel, KubeResource, PrinterColumn, Rule, immutable, list_map
from .datadomain import Method
from .meta import Condition, LocalObjectReference, UIDReference, VolumePath, conditions_field
from .scalars import (
    Digest,
    DNSLabel,
    DNSSubdomain,
    FileName,
    LabelValue,
    Quantity,
    Rate,
    Time,
    VaultPath,
    WrappedKey,
)

# Child objects (Job, Service, pods "<job>-<index>") are named after the FineTuneJob and a pod's
# hostname must stay a 63-character DNS label, so the name leaves room for what is appended.
MAX_NAME_LENGTH = 48


class BaseModelSource(KubeModel):
    """The model to fine-tune: files on a claim in the domain's workload namespace, pinned by
    digest. (A ModelArtifact as base model is not offered: its files live in its own domain's
    workload namespace, and LoRA adapters are no base model.)"""

    pvc: VolumePath
    """Model files on a PersistentVolumeClaim in the domain's workload namespace, where the job
    runs (the domain's admin provisions it). Required."""

    digest: Digest
    """sha256 digest of the base model's manifest (manifest.json in its directory, as
    ``python -m sealtune_trainer.tiny`` or the data tool writes it). The trainer refuses files
    that do not hash to it, before it loads any. Required."""


ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)]


class LoraConfig(KubeModel):
    """Low-rank adapter settings (peft's LoraConfig)."""

    r: int = Field(16, ge=1, le=1024)
    """Rank of the adapter matrices. Optional; defaults to 16."""

    alpha: int = Field(32, ge=1, le=4096)
    """Scaling numerator (lora_alpha); the update is scaled by alpha / r. Optional; defaults to 32."""

    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapter's input, in [0, 1). Optional; defaults to 0.05."""

    target_modules: list[ModuleName] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        max_length=32,
        json_schema_extra=LIST_SET,
    )
    """Names of the modules adapted, or all-linear. Optional; defaults to the seven attention
    and MLP projections of Llama-shaped models."""

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        # A set on the server: the same name twice is refused there, so it is here too.
        if len(set(names)) != len(names):
            raise ValueError("target modules must be distinct")
        return names


class QLoraConfig(KubeModel):
    """Quantisation of the frozen base model for QLoRA."""

    bits: Literal[4, 8]
    """Bits per base-model weight: 4 (NF4) or 8. Required."""


class MethodSpec(KubeModel):
    """The fine-tuning method and its settings."""

    RULES = (
        Rule(
            "self.type == 'full' || has(self.lora)",
            "spec.method.lora is required when spec.method.type is lora or qlora",
            lambda m: m.type == "full" or m.lora is not None,
        ),
        Rule(
            "self.type != 'full' || !has(self.lora)",
            "spec.method.lora must not be set when spec.method.type is full",
            lambda m: m.type != "full" or m.lora is None,
        ),
        Rule(
            "self.type != 'qlora' || has(self.qlora)",
            "spec.method.qlora.bits is required when spec.method.type is qlora",
            lambda m: m.type != "qlora" or m.qlora is not None,
        ),
        Rule(
            "self.type == 'qlora' || !has(self.qlora)",
            "spec.method.qlora must not be set unless spec.method.type is qlora",
            lambda m: m.type == "qlora" or m.qlora is None,
        ),
    )

    type: Method
    """lora: train low-rank adapters; qlora: the same on a quantised base model; full: train
    every weight. Required."""

    lora: LoraConfig | None = None
    """Adapter settings. Required when type is lora or qlora, forbidden when it is full."""

    qlora: QLoraConfig | None = None
    """Quantisation settings. Required when type is qlora, forbidden otherwise."""


class TrainingSpec(KubeModel):
    """How long and how the model trains."""

    RULES = (
        Rule(
            "has(self.epochs) != has(self.maxSteps)",
            "set exactly one of spec.training.epochs and spec.training.maxSteps",
            lambda t: (t.epochs is None) != (t.max_steps is None),
        ),
    )

    epochs: int | None = Field(None, ge=1, le=1000)
    """Passes over the data set. Optional; exactly one of epochs and maxSteps."""

    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    """Optimizer steps to run. Optional; exactly one of epochs and maxSteps."""

    learning_rate: Rate = "2e-4"
    """Peak learning rate, a decimal string in (0, 1] such as "2e-4". Optional; defaults to 2e-4."""

    batch_size: int = Field(1, ge=1, le=4096)
    """Sequences per GPU per micro-step. Optional; defaults to 1."""

    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    """Micro-steps per optimizer step. Optional; defaults to 1."""

    max_seq_length: int = Field(2048, ge=16, le=131_072)
    """Longest sequence in tokens; longer ones are truncated. Optional; defaults to 2048."""

    packing: bool = False
    """Pack several short sequences into one of maxSeqLength. Optional; defaults to false."""

    seed: int = Field(42, ge=0, le=2_147_483_647)
    """Random seed, recorded in the artifact. Optional; defaults to 42."""

    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Compute precision. Optional; defaults to bf16."""

    checkpoint_every_steps: int | None = Field(None, ge=1, le=10_000_000)
    """Write a checkpoint every this many optimizer steps. Optional; unset writes none until the end."""


class Resources(KubeModel):
    """Workers and what each gets."""

    workers: int = Field(1, ge=1, le=1024)
    """Worker pods (nodes), one torchrun agent each. Optional; defaults to 1."""

    gpus_per_worker: int = Field(1, ge=0, le=16)
    """GPUs per worker (nvidia.com/gpu), also the processes per worker. Optional; defaults to 1."""

    cpu: Quantity | None = None
    """CPU per worker, request and limit, e.g. "8". Optional; defaults to the operator's setting."""

    memory: Quantity | None = None
    """Memory per worker, request and limit, e.g. "64Gi". Optional; defaults to the operator's setting."""


class DeepSpeedSpec(KubeModel):
    """DeepSpeed ZeRO settings for multi-GPU training."""

    RULES = (
        Rule(
            "self.offload == 'none' || self.zeroStage >= 2",
            "spec.deepspeed.offload cpu needs spec.deepspeed.zeroStage 2 or 3",
            lambda d: d.offload == "none" or d.zero_stage >= 2,
        ),
    )

    zero_stage: Literal[0, 2, 3] = 2
    """ZeRO stage: 0 (plain data parallel), 2 (shard optimizer state and gradients) or 3 (also
    parameters). Optional; defaults to 2."""

    offload: Literal["none", "cpu"] = "none"
    """Offload optimizer state to CPU memory. Optional; defaults to none."""


class DifferentialPrivacy(KubeModel):
    """DP-SGD settings (Opacus)."""

    target_epsilon: float = Field(gt=0, le=100)
    """Privacy budget epsilon the noise is calibrated to reach by the end. Required."""

    delta: float = Field(1e-5, gt=0, lt=1)
    """Privacy parameter delta, in (0, 1); below 1/dataset size. Optional; defaults to 1e-5."""

    max_grad_norm: float = Field(1.0, gt=0, le=1000)
    """Per-sample gradient clipping norm. Optional; defaults to 1.0."""


class JobPrivacy(KubeModel):
    """Privacy measures of the run."""

    differential_privacy: DifferentialPrivacy | None = None
    """Train with DP-SGD. Optional; unset trains without it. Not allowed with DeepSpeed ZeRO."""

    canaries: int = Field(0, ge=0, le=10_000)
    """Random canary sequences inserted into the data to measure memorisation (exposure).
    Optional; defaults to 0."""


class EvaluationGates(KubeModel):
    """Thresholds the trained model must meet before it is signed; unset gates do not apply,
    and the domain's privacy requirements add their own."""

    max_eval_loss: float | None = Field(None, gt=0, le=1000)
    """Highest held-out loss accepted. Optional."""

    max_canary_exposure: float | None = Field(None, ge=0, le=64)
    """Highest canary exposure (bits) accepted. Optional."""

    max_membership_inference_auc: float | None = Field(None, ge=0.5, le=1)
    """Highest membership-inference AUC accepted. Optional."""


class Output(KubeModel):
    """Where the result goes."""

    artifact_name: DNSSubdomain | None = None
    """Name of the ModelArtifact to publish. Optional; defaults to the job's name."""

    storage: VolumePath
    """Claim in the domain's workload namespace, and the directory in it, under which the run
    writes the adapter (or model) and its manifest, in <namespace>/<name>-<uid> of its own.
    Required."""


class SecretFile(KubeModel):
    """A Vault secret the job may read, and the file it appears as in the pods' in-memory volume."""

    RULES = (
        Rule(
            "!self.fileName.contains('/') && !self.fileName.startsWith('.')",
            "spec.secrets[].fileName must be a plain file name: no '/', no '..', not hidden",
            lambda s: "/" not in s.file_name and not s.file_name.startswith("."),
        ),
    )

    vault_path: VaultPath
    """Vault API path of the secret, e.g. secret/data/team-a/hf-token. Required."""

    key: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")
    """Key within the secret whose value the file holds. Optional; unset writes the secret's
    data as JSON."""

    file_name: FileName
    """Name of the file under the secrets mount: a plain name, no '/' or '..'. Required."""


class PodMetadata(KubeModel):
    """Extra labels and annotations for the worker pods, e.g. for cost attribution or a
    simulator's timing. Keys under sealtune.dev/ are the operator's and are refused."""

    RULES = (
        Rule(
            "(!has(self.labels) || !self.labels.exists(k, k.startsWith('sealtune.dev/'))) && "
            "(!has(self.annotations) || !self.annotations.exists(k, k.startsWith('sealtune.dev/')))",
            "spec.podMetadata keys under sealtune.dev/ are reserved for the operator; use another prefix",
            lambda m: not any(k.startswith("sealtune.dev/") for k in [*m.labels, *m.annotations]),
        ),
    )

    labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=16)
    """Labels added to every worker pod. Optional."""

    annotations: dict[str, Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=16
    )
    """Annotations added to every worker pod. Optional."""


class Scheduling(KubeModel):
    """When and how long the job runs."""

    suspend: bool = False
    """Hold the job: no pods run; setting it on a running job stops its pods. Optional;
    defaults to false."""

    active_deadline_seconds: int = Field(86_400, ge=60, le=2_592_000)
    """Seconds the job may run before it fails with DeadlineExceeded; also bounds its Vault
    token TTL. Optional; defaults to 86400 (one day)."""

    backoff_limit: int = Field(2, ge=0, le=100)
    """Worker failures retried before the job fails. Optional; defaults to 2."""

    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=31_536_000)
    """Delete the FineTuneJob this many seconds after it finished. Optional; unset keeps it
    (retention of its data is the domain's, regardless)."""

    queue_name: DNSLabel | None = None
    """Kueue LocalQueue to submit to; the job waits suspended until Kueue admits it. Optional."""

    priority_class_name: DNSSubdomain | None = None
    """PriorityClass of the worker pods. Optional."""


class FineTuneJobSpec(KubeModel):
    """What to train, on which data, how, and where the result goes."""

    RULES = (
        Rule(
            "!has(self.privacy) || !has(self.privacy.differentialPrivacy) || !has(self.deepspeed) "
            "|| self.deepspeed.zeroStage == 0",
            "spec.deepspeed.zeroStage must be 0, or spec.deepspeed unset, when "
            "spec.privacy.differentialPrivacy is set: DP-SGD does not work with DeepSpeed ZeRO",
            lambda s: (
                s.privacy.differential_privacy is None or s.deepspeed is None or s.deepspeed.zero_stage == 0
            ),
        ),
    )

    domain_ref: LocalObjectReference = Field(json_schema_extra=immutable("spec.domainRef"))
    """The DataDomain whose data the job trains on. Required; immutable."""

    base_model: BaseModelSource = Field(json_schema_extra=immutable("spec.baseModel"))
    """The model to start from. Required; immutable."""

    method: MethodSpec = Field(json_schema_extra=immutable("spec.method"))
    """Fine-tuning method. Required; immutable."""

    training: TrainingSpec
    """Training schedule and hyperparameters. Required (epochs or maxSteps)."""

    resources: Resources = Field(default_factory=Resources)
    """Workers, GPUs, CPU and memory. Optional; defaults to one worker with one GPU."""

    deepspeed: DeepSpeedSpec | None = None
    """DeepSpeed ZeRO settings. Optional; unset trains without DeepSpeed."""

    privacy: JobPrivacy = Field(default_factory=JobPrivacy)
    """Differential privacy and canaries. Optional; defaults to neither."""

    evaluation: EvaluationGates = Field(default_factory=EvaluationGates)
    """Gates the result must pass before it is signed. Optional."""

    output: Output
    """Where the result is written and what it is published as. Required."""

    secrets: list[SecretFile] = Field(
        default_factory=list, max_length=16, json_schema_extra=list_map("fileName")
    )
    """Vault secrets the job may read, each delivered as a file in memory; nothing else is
    readable. Optional."""

    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Extra labels and annotations for the worker pods. Optional."""

    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Suspension, deadline, retries, cleanup and queueing. Optional."""

    @field_validator("secrets")
    @classmethod
    def _distinct_files(cls, secrets: list[SecretFile]) -> list[SecretFile]:
        # The server keys the list by fileName and refuses duplicates; so does the model.
        names = [s.file_name for s in secrets]
        if len(set(names)) != len(names):
            raise ValueError("spec.secrets[].fileName must be distinct")
        return secrets


JobPhase = Literal["Pending", "Blocked", "Suspended", "Running", "Succeeded", "Failed"]


class WorkerCounts(KubeModel):
    """Worker pods by state, from the Job."""

    active: int = Field(0, ge=0)
    """Workers running or pending. Optional."""

    succeeded: int = Field(0, ge=0)
    """Workers that completed. Optional."""

    failed: int = Field(0, ge=0)
    """Worker pods that failed (retried up to backoffLimit). Optional."""


class PlacementStatus(KubeModel):
    """Where the workers ran."""

    nodes: list[DNSSubdomain] = Field(default_factory=list, max_length=1024, json_schema_extra=LIST_SET)
    """Nodes the worker pods were bound to. Optional."""

    runtime_class_name: DNSSubdomain | None = None
    """RuntimeClass of the worker pods, when one was set. Optional."""


class WorkloadStatus(KubeModel):
    """Where the job's workload runs: the domain's workload namespace, which tenants hold no
    rights in."""

    namespace: DNSLabel
    """The workload namespace. Required."""

    batch_job: DNSSubdomain
    """The name of the job's Indexed Job there. Required."""

    batch_job_uid: str | None = Field(None, max_length=64)
    """The uid of the Indexed Job the operator created: only that Job's pods count as the job's
    workers, and their results as its result. Optional; set once the Job exists."""


class Progress(KubeModel):
    """Live training progress read from the trainer's metrics."""

    step: int = Field(0, ge=0)
    """Optimizer steps done. Optional."""

    total_steps: int | None = Field(None, ge=0)
    """Optimizer steps planned. Optional."""

    percent: int | None = Field(None, ge=0, le=100)
    """step / totalSteps as a whole percentage, for printing. Optional."""

    loss: float | None = None
    """Latest training loss. Optional."""

    tokens_per_second: float | None = Field(None, ge=0)
    """Training throughput across all workers. Optional."""

    eta_seconds: int | None = Field(None, ge=0)
    """Estimated seconds until training ends. Optional."""

    updated_at: Time | None = None
    """When these numbers were read. Optional."""


class GateOutcome(KubeModel):
    """The result of one evaluation gate."""

    name: str = Field(max_length=64, pattern=r"^[a-zA-Z][a-zA-Z0-9]*$")
    """The gate, e.g. maxEvalLoss, maxCanaryExposure, maxMembershipInferenceAUC, maxEpsilon. Required."""

    passed: bool
    """Whether the measured value met the threshold. Required."""

    value: float | None = None
    """The measured value. Optional."""

    threshold: float | None = None
    """The threshold applied (the stricter of job and domain). Optional."""


class TrainingResult(KubeModel):
    """What the trainer reported and the operator verified."""

    steps: int | None = Field(None, ge=0)
    """Optimizer steps run. Optional."""

    train_loss: float | None = None
    """Final training loss. Optional."""

    eval_loss: float | None = None
    """Held-out loss. Optional."""

    canary_exposure: float | None = None
    """Measured canary exposure in bits. Optional."""

    membership_inference_auc: float | None = None
    """Measured membership-inference AUC. Optional."""

    epsilon: float | None = None
    """DP epsilon spent, when trained with DP-SGD. Optional."""

    data_digest: Digest | None = None
    """Digest of the data the trainer actually read; must equal the domain's. Optional."""

    manifest_digest: Digest | None = None
    """Digest of the output manifest. Optional."""

    gates: list[GateOutcome] = Field(default_factory=list, max_length=16, json_schema_extra=list_map("name"))
    """Outcome of every evaluation gate. Optional."""


DeletionTarget = Literal["trainingCopies", "checkpoints", "logs", "vaultRole", "dataKey"]


class ScheduledDeletion(KubeModel):
    """When one kind of the job's data falls due for deletion, and when it was deleted."""

    target: DeletionTarget
    """What is deleted: trainingCopies, checkpoints, logs, vaultRole or dataKey. Required."""

    due_at: Time
    """When it falls due: the job's finish plus the domain's retention. Required."""

    deleted_at: Time | None = None
    """When it was deleted and the deletion verified. Optional; unset while pending."""


class DeletionReceipt(KubeModel):
    """A signed record that one object was deleted and verified gone. Status keeps the latest
    receipts; the audit log keeps all."""

    kind: str = Field(max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    """Kind of what was deleted, e.g. PersistentVolumeClaim, ConfigMap, VaultRole, TransitKey. Required."""

    name: str = Field(max_length=253)
    """Its name. Required."""

    uid: str | None = Field(None, max_length=64)
    """Its uid, for Kubernetes objects. Optional."""

    digest: Digest | None = None
    """Digest of its content, where known. Optional."""

    deleted_at: Time
    """When it was deleted. Required."""

    policy: str = Field(max_length=256)
    """The rule that made it due, e.g. retention.checkpoints=168h. Required."""

    verification: str = Field(max_length=256)
    """How its absence was checked, e.g. "GET returned 404", "transit decrypt refused". Required."""

    signature: str | None = Field(None, max_length=1024)
    """Base64 signature of the receipt by the operator's key. Optional until signed."""


class Timestamps(KubeModel):
    """Milestones deadlines are computed from, kept in status so that deletions that fell due
    while the operator was down are found when it returns."""

    admitted_at: Time | None = None
    """When the policy first admitted the job. Optional."""

    finished_at: Time | None = None
    """When the job succeeded or failed; retention counts from here. Optional."""

    data_deleted_at: Time | None = None
    """When the last scheduled deletion was done. Optional."""


class VaultStatus(KubeModel):
    """Names of the job's Vault objects (never secret values)."""

    role: str | None = Field(None, max_length=128)
    """Kubernetes-auth role the job's pods log in with. Optional."""

    policy: str | None = Field(None, max_length=128)
    """Vault policy granting the job's secret paths. Optional."""

    data_key: str | None = Field(None, max_length=128)
    """Name of the job's transit key, which wraps the key its checkpoints and scratch data are
    sealed with; deleting it crypto-shreds them. Optional."""

    transit_mount: str | None = Field(None, max_length=128)
    """Mount path of the transit engine holding dataKey. Optional."""

    wrapped_data_key: WrappedKey | None = None
    """The job's data key as dataKey wrapped it: ciphertext only, useless once dataKey is
    deleted. Optional."""


class FineTuneJobStatus(KubeModel):
    """What the operator observed about the job."""

    phase: JobPhase | None = None
    """A one-word summary for printing (Pending, Blocked, Suspended, Running, Succeeded,
    Failed); read conditions to act. Optional."""

    observed_generation: int | None = Field(None, ge=0)
    """The metadata.generation this status describes. Optional."""

    conditions: list[Condition] = conditions_field(
        "Types: PolicyAdmitted, SecretsReady, Scheduled, Running, Succeeded, Failed, Suspended, "
        "Published, DataDeleted."
    )

    start_time: Time | None = None
    """When the workers were first started. Optional."""

    completion_time: Time | None = None
    """When the job succeeded. Optional."""

    workers: WorkerCounts | None = None
    """Worker pods by state. Optional."""

    workload: WorkloadStatus | None = None
    """Where the workload runs and which batch Job is the job's. Optional."""

    placement: PlacementStatus | None = None
    """Where the workers ran. Optional."""

    progress: Progress | None = None
    """Live progress while training. Optional."""

    result: TrainingResult | None = None
    """The verified training result. Optional."""

    artifact_ref: UIDReference | None = None
    """The ModelArtifact published from this job. Optional."""

    timestamps: Timestamps | None = None
    """Milestones deadlines are computed from. Optional."""

    deletions: list[ScheduledDeletion] = Field(
        default_factory=list, max_length=8, json_schema_extra=list_map("target")
    )
    """Scheduled deletions of the job's data and their state. Optional."""

    deletion_receipts: list[DeletionReceipt] = Field(default_factory=list, max_length=64)
    """The latest signed deletion receipts (at most 64; the audit log has all). Optional."""

    vault: VaultStatus | None = None
    """Names of the job's Vault role, policy and data key. Optional."""


class FineTuneJob(KubeResource):
    """One fine-tuning run on a DataDomain's data, isolated, placed and deleted as the domain's
    policy says, ending in a signed ModelArtifact."""

    KIND = KindInfo(
        kind="FineTuneJob",
        plural="finetunejobs",
        short_names=("ftj",),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("Phase", ".status.phase", "string", "Summary of the conditions."),
            PrinterColumn("Domain", ".spec.domainRef.name", "string", "The DataDomain trained on."),
            PrinterColumn("Method", ".spec.method.type", "string", "Fine-tuning method."),
            PrinterColumn(
                "Progress%", ".status.progress.percent", "integer", "Percent of training steps done."
            ),
            PrinterColumn(
                "Artifact", ".status.artifactRef.name", "string", "The published ModelArtifact.", priority=1
            ),
            AGE,
        ),
        selectable_fields=(".spec.domainRef.name",),
    )
    RULES = (
        Rule(
            f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the job's pods are named after it",
            lambda j: len(j.metadata.get("name", "")) <= MAX_NAME_LENGTH,
        ),
    )

    kind: Literal["FineTuneJob"] = "FineTuneJob"
    """Kind of the object: FineTuneJob."""

    spec: FineTuneJobSpec
    """What to train and how. Required."""

    status: FineTuneJobStatus | None = None
    """What the operator observed. Written by the operator."""
