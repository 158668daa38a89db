"""DataDomain: a cluster-scoped governance boundary around one data set."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from .base import AGE, LIST_SET, KindInfo, KubeModel, KubeResource, PrinterColumn, Rule, immutable, list_map
from .meta import (
    Condition,
    LabelSelector,
    NodeSelectorTerm,
    Toleration,
    conditions_field,
)
from .scalars import (
    URL,
    Digest,
    DNSLabel,
    DNSSubdomain,
    Duration,
    LabelValue,
    RelativePath,
    Time,
    UserGroup,
    VaultPathPrefix,
    WrappedKey,
)

Classification = Literal["public", "internal", "confidential", "restricted"]
Method = Literal["lora", "qlora", "full"]
_DEFAULT_METHODS: tuple[Method, ...] = ("lora", "qlora")


class PVCSource(KubeModel):
    """Data on a PersistentVolumeClaim in the domain's workload namespace (spec.workloadNamespace),
    which its admin provisions there. Jobs mount it read-only."""

    claim_name: DNSSubdomain
    """Name of the PersistentVolumeClaim. Required."""

    path: RelativePath = "."
    """Directory of the data set inside the claim. Optional; defaults to '.', the claim's root."""


class S3Source(KubeModel):
    """Data in an S3-compatible object store inside the organisation's boundary."""

    uri: str = Field(
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_][A-Za-z0-9_.-]*)*/?$",
        max_length=1024,
    )
    """Bucket and prefix, ``s3://bucket/prefix/``. Required."""

    endpoint: URL | None = None
    """The store's endpoint, e.g. ``https://minio.storage.svc:9000``. Optional; unset means AWS S3."""

    region: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9-]+$")
    """The store's region. Optional."""

    credentials_vault_path: str | None = Field(
        None, max_length=512, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"
    )
    """Vault path holding the access key the jobs read the data with. Optional; unset means the
    store authenticates the pods some other way (e.g. workload identity)."""


class DataSource(KubeModel):
    """Where the data set lives and what it must hash to: exactly one of pvc and s3."""

    RULES = (
        Rule(
            "has(self.pvc) != has(self.s3)",
            "set exactly one of spec.source.pvc and spec.source.s3",
            lambda s: (s.pvc is None) != (s.s3 is None),
        ),
    )

    pvc: PVCSource | None = None
    """The data set on a PersistentVolumeClaim. Optional; exactly one of pvc and s3."""

    s3: S3Source | None = None
    """The data set in an S3-compatible store. Optional; exactly one of pvc and s3."""

    manifest_digest: Digest
    """sha256 digest of the data set's manifest (the sorted list of its files and their digests).
    Trainers refuse data that does not hash to it. Required."""

    format: Literal["text", "promptCompletion", "chat"] = "text"
    """How each JSON line is shaped: text ({"text"}), promptCompletion ({"prompt", "completion"})
    or chat ({"messages"}, rendered with the base model's chat template). Optional; defaults to text."""


class VaultTransitEncryption(KubeModel):
    """Data encrypted under a Vault transit key; each job also gets its own data key."""

    key_name: str = Field(max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """Name of the transit key that decrypts the data set. Required."""

    mount: str = Field(
        "transit", max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"
    )
    """Mount path of the transit secrets engine. Optional; defaults to transit."""

    wrapped_data_key: WrappedKey
    """The data set's key as transit wrapped it (``vault:v1:...``, from ``transit/datakey/wrapped``):
    ciphertext, safe to store here; only a job's pods may ask Vault to unwrap it. Required."""


class Encryption(KubeModel):
    """How the data set is encrypted at rest."""

    RULES = (
        Rule(
            "(self.type == 'vaultTransit') == has(self.vaultTransit)",
            "spec.encryption.vaultTransit is required when spec.encryption.type is vaultTransit, "
            "and forbidden otherwise",
            lambda e: (e.type == "vaultTransit") == (e.vault_transit is not None),
        ),
    )

    type: Literal["none", "vaultTransit"] = "none"
    """none: stored in clear (rely on volume encryption); vaultTransit: encrypted with a Vault
    transit key. Optional; defaults to none."""

    vault_transit: VaultTransitEncryption | None = None
    """The transit key. Required when type is vaultTransit, forbidden otherwise."""


class Access(KubeModel):
    """Who may train on the data. A namespace is admitted when it is listed in namespaces or
    matches namespaceSelector; with neither set, no namespace is (deny by default)."""

    namespaces: list[DNSLabel] = Field(default_factory=list, max_length=256, json_schema_extra=LIST_SET)
    """Names of namespaces whose FineTuneJobs may use the domain. Optional."""

    namespace_selector: LabelSelector | None = None
    """Namespaces whose labels match may use the domain. Optional."""

    vault_paths: list[VaultPathPrefix] = Field(
        default_factory=list, max_length=32, json_schema_extra=LIST_SET
    )
    """Vault paths the jobs' spec.secrets may name: each admits itself and what lies below it
    (``secret/data/shared/hf-token`` admits that path and ``secret/data/shared/hf-token/...``; one
    ending in '/' admits every path that starts with it). ``{namespace}`` stands for the job's
    namespace, e.g. ``secret/data/{namespace}/``. No globs ('*', '+'), no '..'. Optional; empty
    admits no declared secret (the domain's own spec.source.s3.credentialsVaultPath is always
    readable by its jobs)."""


class Limits(KubeModel):
    """Upper bounds on what one job may ask for; an unset limit does not bound."""

    max_workers: int | None = Field(None, ge=1, le=1024)
    """Most worker pods per job. Optional."""

    max_gpus_per_worker: int | None = Field(None, ge=0, le=16)
    """Most GPUs per worker pod. Optional."""

    max_total_gpus: int | None = Field(None, ge=0, le=16384)
    """Most GPUs per job, all workers together. Optional."""

    max_epochs: int | None = Field(None, ge=1, le=1000)
    """Most passes over the data per job. Optional."""


class QueueGrant(KubeModel):
    """A Kueue LocalQueue in the domain's workload namespace, and the namespaces whose jobs may
    submit to it."""

    name: DNSLabel
    """The LocalQueue's name (spec.scheduling.queueName). A cluster admin makes it in the
    workload namespace, pointing at the ClusterQueue that holds the team's quota. Required."""

    namespaces: list[DNSLabel] = Field(default_factory=list, max_length=256, json_schema_extra=LIST_SET)
    """Namespaces whose jobs may name it. Optional; empty admits every namespace the domain
    admits."""


class Placement(KubeModel):
    """Where jobs may run. Jobs that cannot be placed as allowed stay Pending; they are never
    placed elsewhere."""

    RULES = (
        Rule(
            "!self.requireQueue || (has(self.queues) && size(self.queues) > 0)",
            "spec.placement.queues needs an entry when spec.placement.requireQueue is true: name the "
            "LocalQueues the domain's jobs may use",
            lambda p: not p.require_queue or bool(p.queues),
        ),
        Rule(
            "!self.requireConfidentialCompute || has(self.confidentialRuntimeClassName)",
            "spec.placement.confidentialRuntimeClassName is required when "
            "spec.placement.requireConfidentialCompute is true",
            lambda p: not p.require_confidential_compute or p.confidential_runtime_class_name is not None,
        ),
    )

    require_confidential_compute: bool = False
    """Run only in confidential VMs (TDX, SEV-SNP) on nodes in confidential-computing mode.
    Optional; defaults to false."""

    confidential_runtime_class_name: DNSSubdomain | None = None
    """The RuntimeClass whose handler starts confidential pods, e.g. kata-cc. Required when
    requireConfidentialCompute is true."""

    node_pools: list[NodeSelectorTerm] = Field(default_factory=list, max_length=16)
    """Node pools jobs may use, as node-selector terms; a node in any term qualifies.
    Optional; empty allows every node."""

    regions: list[LabelValue] = Field(default_factory=list, max_length=32, json_schema_extra=LIST_SET)
    """Values of topology.kubernetes.io/region jobs may run in (data residency). Optional;
    empty allows every region."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Tolerations added to every job pod, e.g. for tainted GPU pools. Optional."""

    queues: list[QueueGrant] = Field(default_factory=list, max_length=64, json_schema_extra=list_map("name"))
    """The Kueue LocalQueues jobs may name, each open to listed namespaces. Every team's jobs
    run in the one workload namespace, so a queue's quota follows a team's jobs only because no
    other team may name it. Optional; empty admits no queue."""

    require_queue: bool = False
    """Refuse jobs without spec.scheduling.queueName, so that no job bypasses quota. Optional;
    defaults to false."""


class Port(KubeModel):
    """A destination port."""

    port: int = Field(ge=1, le=65535)
    """Port number. Required."""

    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    """Protocol. Optional; defaults to TCP."""


class EgressRule(KubeModel):
    """One destination jobs may reach."""

    RULES = (
        Rule(
            "isCIDR(self.cidr)",
            "cidr must be an IP prefix such as 10.0.0.0/8",
            lambda e: _is_cidr(e.cidr),
        ),
    )

    cidr: str = Field(max_length=43, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")
    """Destination addresses as a CIDR, e.g. 10.20.0.0/16. Required."""

    ports: list[Port] = Field(default_factory=list, max_length=16)
    """Destination ports. Optional; empty allows every port."""


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


class Network(KubeModel):
    """What job pods may reach. Everything else is denied both ways, except DNS, the job's own
    pods and metrics scraping, which the operator opens itself."""

    egress: list[EgressRule] = Field(default_factory=list, max_length=32)
    """Destinations job pods may connect to besides DNS, Vault and their peers. Optional."""

    vault_address: URL | None = None
    """Vault's address as pods reach it, e.g. https://vault.vault.svc:8200. Optional; unset
    uses the operator's configured address."""


class Retention(KubeModel):
    """How long each kind of copy may live, counted from the job's end (status.timestamps.finishedAt)
    or, for artifacts, from their creation."""

    training_copies: Duration = "24h"
    """Staged or decrypted copies of the data and scratch volumes. Optional; defaults to 24h."""

    checkpoints: Duration = "168h"
    """Training checkpoints. Optional; defaults to 168h."""

    logs: Duration = "720h"
    """Trainer logs the operator controls. Optional; defaults to 720h."""

    artifacts: Duration = "8760h"
    """ModelArtifacts and their files. Optional; defaults to 8760h."""

    pin_approved_artifacts: bool = True
    """Keep Approved artifacts past the artifacts duration, until they are revoked. Optional;
    defaults to true."""


ReleasableStage = Literal["Candidate", "Approved"]


class ReleaseDestination(KubeModel):
    """Storage that released weights may go to: a claim in the domain's workload namespace that a
    cluster admin provisions for the recipients (for example an NFS export or a bucket-backed
    volume that the serving side mounts read-only). Tenants cannot reach it from the workload
    namespace; only the operator's release pod writes there."""

    name: DNSLabel
    """What a release request names (sealtune export --to NAME). Required."""

    claim_name: DNSSubdomain
    """The PersistentVolumeClaim, in the domain's workload namespace. Required."""

    path: RelativePath = "."
    """Directory in the claim; each release lands in <path>/<namespace>/<artifact>-<uid>.
    Optional; defaults to the claim's root."""

    namespaces: list[DNSLabel] = Field(default_factory=list, max_length=256, json_schema_extra=LIST_SET)
    """Namespaces whose artifacts may be released here. Optional; empty admits every namespace
    the domain admits."""

    groups: list[UserGroup] = Field(default_factory=list, max_length=32, json_schema_extra=LIST_SET)
    """Groups, as the API server authenticates them, of which the requesting user must hold
    one. Optional; empty leaves it to RBAC (the verb release on modelartifacts/promotion)."""


class Release(KubeModel):
    """Who may obtain an artifact's files, in which stage, and where they may go. Every request
    is decided by the operator and recorded in the audit log, refusals included."""

    RULES = (
        Rule(
            "!has(self.stages) || size(self.stages) == 0 || (has(self.destinations) && "
            "size(self.destinations) > 0)",
            "spec.release.destinations needs an entry when spec.release.stages allows a release; "
            "name the claim released weights go to, or leave stages empty to keep them in the domain",
            lambda r: not r.stages or bool(r.destinations),
        ),
    )

    stages: list[ReleasableStage] = Field(default_factory=list, max_length=2, json_schema_extra=LIST_SET)
    """Stages in which files may leave: [Approved] is the usual rule. Optional; empty (the
    default) means never: the weights stay in the domain."""

    destinations: list[ReleaseDestination] = Field(
        default_factory=list, max_length=16, json_schema_extra=list_map("name")
    )
    """Where released files may go. Optional; empty admits no release."""


class PrivacyRequirements(KubeModel):
    """Privacy every job on this domain must meet."""

    RULES = (
        Rule(
            "!self.requireDifferentialPrivacy || has(self.maxEpsilon)",
            "spec.privacy.maxEpsilon is required when spec.privacy.requireDifferentialPrivacy is true",
            lambda p: not p.require_differential_privacy or p.max_epsilon is not None,
        ),
    )

    require_differential_privacy: bool = False
    """Jobs must train with DP-SGD (spec.privacy.differentialPrivacy). Optional; defaults to false."""

    max_epsilon: float | None = Field(None, gt=0, le=100)
    """Largest DP epsilon a job may target. Required when requireDifferentialPrivacy is true."""

    max_canary_exposure: float | None = Field(None, ge=0, le=64)
    """Largest canary exposure (bits) an artifact may show and still be approved. Optional."""

    max_membership_inference_auc: float | None = Field(None, ge=0.5, le=1)
    """Largest membership-inference AUC an artifact may show and still be approved. Optional."""


class DataDomainSpec(KubeModel):
    """The policy of one data set: what it is, who may train on it, where and how."""

    RULES = (
        Rule(
            "!has(self.workloadNamespace) || !(self.workloadNamespace.startsWith('kube-') "
            "|| self.workloadNamespace == 'default')",
            "spec.workloadNamespace may not be default or a kube- namespace: name a namespace of "
            "the domain's own, or leave it unset for sealtune-<domain name>",
            lambda s: (
                s.workload_namespace is None
                or not (s.workload_namespace.startswith("kube-") or s.workload_namespace == "default")
            ),
        ),
    )

    description: str | None = Field(None, max_length=1024)
    """What the data is, for people. Optional."""

    workload_namespace: DNSLabel | None = Field(None, json_schema_extra=immutable("spec.workloadNamespace"))
    """Namespace the domain's jobs run in: their pods, ServiceAccounts, Vault identities, data,
    base-model and output claims live there, and tenants hold no rights in it. The operator
    creates it (Pod Security restricted, default-deny network) and refuses to use a namespace it
    did not create for this domain. Optional; defaults to sealtune-<domain name>; immutable."""

    classification: Classification
    """Sensitivity tier: public, internal, confidential or restricted. Required."""

    source: DataSource
    """Where the data set lives and its digest. Required."""

    encryption: Encryption = Field(default_factory=Encryption)
    """How the data set is encrypted at rest. Optional; defaults to none."""

    access: Access = Field(default_factory=Access)
    """Namespaces and ServiceAccounts that may use the domain, and the Vault paths their jobs may
    read. Optional; empty admits none."""

    methods: list[Method] = Field(
        default_factory=lambda: list(_DEFAULT_METHODS), min_length=1, max_length=3, json_schema_extra=LIST_SET
    )
    """Fine-tuning methods allowed: lora, qlora, full. Optional; defaults to [lora, qlora]."""

    limits: Limits = Field(default_factory=Limits)
    """Bounds on workers, GPUs and epochs per job. Optional; unset bounds nothing."""

    placement: Placement = Field(default_factory=Placement)
    """Where jobs may run. Optional; defaults to anywhere, without confidential compute."""

    network: Network = Field(default_factory=Network)
    """What jobs may reach. Optional; defaults to DNS, Vault and their own pods only."""

    retention: Retention = Field(default_factory=Retention)
    """How long copies, checkpoints, logs and artifacts may live. Optional."""

    privacy: PrivacyRequirements = Field(default_factory=PrivacyRequirements)
    """Privacy requirements on jobs and artifacts. Optional."""

    auto_approve: bool = False
    """Approve an artifact automatically when all its gates pass. Optional; defaults to false,
    so an approver decides."""

    allow_self_approval: bool = False
    """Let the user who requested a job approve its artifact (with the approve verb on
    modelartifacts/promotion). Optional; defaults to false: someone else approves."""

    release: Release = Field(default_factory=Release)
    """Who may obtain artifacts' files, in which stage, and where. Optional; defaults to never."""


DomainPhase = Literal["Ready", "NotReady"]


class DataDomainStatus(KubeModel):
    """What the operator observed about the domain."""

    phase: DomainPhase | None = None
    """A one-word summary for printing; read conditions to act. Optional."""

    observed_generation: int | None = Field(None, ge=0)
    """The metadata.generation this status describes. Optional."""

    conditions: list[Condition] = conditions_field("Types: Ready.")

    workload_namespace: DNSLabel | None = None
    """The namespace the domain's jobs run in. Optional."""

    jobs_using: int | None = Field(None, ge=0)
    """Number of FineTuneJobs that name the domain (finished ones too, until they are deleted),
    counted again every minute. Optional."""

    last_deletion_run: Time | None = None
    """When the operator last applied the domain's retention. Optional."""


class DataDomain(KubeResource):
    """A governance boundary around one data set: its sensitivity, who may train on it, where
    and how, and how long every copy may live."""

    KIND = KindInfo(
        kind="DataDomain",
        plural="datadomains",
        short_names=("dd",),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("Classification", ".spec.classification", "string", "Sensitivity tier."),
            PrinterColumn(
                "Confidential",
                ".spec.placement.requireConfidentialCompute",
                "boolean",
                "Whether jobs must run on confidential-computing nodes.",
            ),
            PrinterColumn(
                "Workload-Namespace", ".status.workloadNamespace", "string", "Where the domain's jobs run."
            ),
            PrinterColumn("Jobs", ".status.jobsUsing", "integer", "FineTuneJobs naming the domain."),
            PrinterColumn("Phase", ".status.phase", "string", "Summary of the conditions.", priority=1),
            AGE,
        ),
    )

    kind: Literal["DataDomain"] = "DataDomain"
    """Kind of the object: DataDomain."""

    spec: DataDomainSpec
    """The domain's policy. Required."""

    status: DataDomainStatus | None = None
    """What the operator observed. Written by the operator."""
