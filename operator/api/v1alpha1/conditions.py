"""Condition types and reasons of the three kinds, as constants.

Conditions are the truth about an object (``phase`` is only a summary for printing). Each
condition type says what True means; its reasons are grouped with it, each documented as
"reason for <Condition>=<status> when ...". Reasons are CamelCase and stable: programs and
alerts match on them, so a retired reason stays here, marked deprecated, never reused.
"""

from enum import StrEnum


class JobConditionType(StrEnum):
    """Condition types of a FineTuneJob, in the order a job meets them."""

    POLICY_ADMITTED = "PolicyAdmitted"
    """True when the job complies with its DataDomain's policy; False names the violation."""
    SECRETS_READY = "SecretsReady"
    """True when the job's Vault role and policy exist and every declared secret path is readable."""
    SCHEDULED = "Scheduled"
    """True when every worker pod is bound to a node the domain allows."""
    RUNNING = "Running"
    """True while the workers train."""
    SUCCEEDED = "Succeeded"
    """True when training finished and its result passed verification (terminal)."""
    FAILED = "Failed"
    """True when the job will not succeed without a new job (terminal)."""
    SUSPENDED = "Suspended"
    """True while the job is suspended by spec.scheduling.suspend or held by its Kueue queue."""
    QUEUE_ADMITTED = "QueueAdmitted"
    """True while Kueue admits the job's Workload; only on jobs that name a queue. False says
    why Kueue holds it, in Kueue's own words, and names the Workload."""
    PUBLISHED = "Published"
    """True when the signed ModelArtifact named in status.artifactRef exists."""
    DATA_DELETED = "DataDeleted"
    """True when every deletion the domain's retention schedules for this job is done."""


class PolicyAdmittedReason(StrEnum):
    """Reasons of the PolicyAdmitted condition."""

    ADMITTED = "Admitted"
    """Reason for PolicyAdmitted=True when every check of the domain's policy passed."""
    DOMAIN_NOT_FOUND = "DomainNotFound"
    """Reason for PolicyAdmitted=False when spec.domainRef names no DataDomain."""
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    """Reason for PolicyAdmitted=False when the domain's access rules do not admit the job's namespace."""
    SERVICE_ACCOUNT_NOT_ALLOWED = "ServiceAccountNotAllowed"
    """Deprecated: spec.serviceAccountName was removed (jobs run under their own ServiceAccount in
    the domain's workload namespace); no code produces this reason any more."""
    OUTPUT_CLAIM_NOT_ALLOWED = "OutputClaimNotAllowed"
    """Reason for PolicyAdmitted=False when spec.output.storage names the domain's data claim."""
    WORKLOAD_NAMESPACE_CONFLICT = "WorkloadNamespaceConflict"
    """Reason for PolicyAdmitted=False when the domain's workload namespace exists but sealtune did
    not create it for this domain: the operator never runs a job in a namespace others control."""
    SECRET_PATH_NOT_ALLOWED = "SecretPathNotAllowed"  # noqa: S105  (a reason, not a secret)
    """Reason for PolicyAdmitted=False when a spec.secrets[].vaultPath lies under none of the
    domain's spec.access.vaultPaths."""
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    """Reason for PolicyAdmitted=False when spec.method.type is not among the domain's methods."""
    LIMIT_EXCEEDED = "LimitExceeded"
    """Reason for PolicyAdmitted=False when workers, GPUs or epochs exceed the domain's limits."""
    PRIVACY_REQUIRED = "PrivacyRequired"
    """Reason for PolicyAdmitted=False when the domain requires differential privacy (or a lower
    epsilon, or stricter gates) than the job asks for."""
    WORKLOAD_JOB_CONFLICT = "WorkloadJobConflict"
    """Reason for PolicyAdmitted=False when the workload namespace holds a batch Job of the job's
    name and uid that the operator did not create: it is never adopted."""
    QUEUE_REQUIRED = "QueueRequired"
    """Reason for PolicyAdmitted=False when the domain requires a Kueue queue
    (spec.placement.requireQueue) and spec.scheduling.queueName is unset."""
    QUEUE_NOT_ALLOWED = "QueueNotAllowed"
    """Reason for PolicyAdmitted=False when spec.scheduling.queueName is not among the domain's
    spec.placement.queues for the job's namespace (it would draw on another team's quota)."""
    CHECKPOINTS_NEED_A_KEY = "CheckpointsNeedAKey"
    """Reason for PolicyAdmitted=False when spec.training.checkpointEverySteps is set on a domain
    without Vault transit encryption: checkpoints are always sealed with the job's own key, and
    only Vault transit makes one."""


class SecretsReadyReason(StrEnum):
    """Reasons of the SecretsReady condition."""

    VAULT_ROLE_READY = "VaultRoleReady"
    """Reason for SecretsReady=True when the job's Vault policy and role exist."""
    NOT_NEEDED = "NotNeeded"
    """Reason for SecretsReady=True when the job declares no secrets and its data is not
    encrypted with Vault: no Vault object is made for it."""
    VAULT_NOT_CONFIGURED = "VaultNotConfigured"
    """Reason for SecretsReady=False when the job needs Vault but the operator has no Vault
    address (SEALTUNE_VAULT_ADDRESS)."""
    VAULT_PERMISSION_DENIED = "VaultPermissionDenied"
    """Reason for SecretsReady=False when Vault refuses the operator's login or request: its
    Kubernetes-auth role or policy is missing or too narrow (retried with backoff)."""
    VAULT_UNAVAILABLE = "VaultUnavailable"
    """Reason for SecretsReady=False when Vault cannot be reached or answers with a server error
    (retried with backoff)."""
    VAULT_SEALED = "VaultSealed"
    """Reason for SecretsReady=False when Vault is sealed (retried with backoff)."""
    SECRET_PATH_NOT_FOUND = "SecretPathNotFound"  # noqa: S105  (a reason, not a secret)
    """Reason for SecretsReady=False when a path in spec.secrets does not exist; the message names it."""
    VAULT_ROLE_REVOKED = "VaultRoleRevoked"
    """Reason for SecretsReady=False when the job ended and its Vault role and policy were removed."""
    WAITING_TO_RUN = "WaitingToRun"
    """Reason for SecretsReady=False while the job's pods may not run (it is suspended, waits in
    its Kueue queue, or its domain's policy refuses it): no Vault role exists for them until
    they may."""


class ScheduledReason(StrEnum):
    """Reasons of the Scheduled condition."""

    PODS_SCHEDULED = "PodsScheduled"
    """Reason for Scheduled=True when every worker pod is bound to an allowed node."""
    PENDING = "Pending"
    """Reason for Scheduled=False while pods wait for the scheduler for less than a cycle."""
    UNSCHEDULABLE = "Unschedulable"
    """Reason for Scheduled=False when no node the domain allows fits; the message carries the
    scheduler's. The job waits: it is never placed elsewhere."""
    QUEUED = "Queued"
    """Reason for Scheduled=False while the job's Kueue queue holds it."""


class RunningReason(StrEnum):
    """Reasons of the Running condition."""

    WORKERS_RUNNING = "WorkersRunning"
    """Reason for Running=True when every worker runs."""
    WORKERS_STARTING = "WorkersStarting"
    """Reason for Running=False while workers are created but not all run."""
    FINISHED = "Finished"
    """Reason for Running=False once the job succeeded or failed."""


class SucceededReason(StrEnum):
    """Reasons of the Succeeded condition."""

    TRAINING_COMPLETED = "TrainingCompleted"
    """Reason for Succeeded=True when every worker completed and the result was verified."""


class FailedReason(StrEnum):
    """Reasons of the Failed condition."""

    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    """Reason for Failed=True when workers failed more often than spec.scheduling.backoffLimit."""
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    """Reason for Failed=True when the job ran past spec.scheduling.activeDeadlineSeconds."""
    POD_FAILURE_POLICY = "PodFailurePolicy"
    """Reason for Failed=True when a worker exited with a code marked as not retriable."""
    RESULT_INVALID = "ResultInvalid"
    """Reason for Failed=True when the trainer's result is missing, malformed or inconsistent."""
    DATA_DIGEST_MISMATCH = "DataDigestMismatch"
    """Reason for Failed=True when the trainer read data whose digest is not the domain's."""


class QueueAdmittedReason(StrEnum):
    """Reasons of the QueueAdmitted condition."""

    ADMITTED = "Admitted"
    """Reason for QueueAdmitted=True: Kueue admitted the Workload to a ClusterQueue and flavor."""
    WAITING = "Waiting"
    """Reason for QueueAdmitted=False while the Workload waits for quota (Kueue's message)."""
    EVICTED = "Evicted"
    """Reason for QueueAdmitted=False after Kueue evicted the Workload (Kueue's reason and message)."""
    NO_WORKLOAD = "NoWorkload"
    """Reason for QueueAdmitted=False before Kueue made a Workload for the batch Job (Kueue not
    running, or not managing batch/job)."""


class SuspendedReason(StrEnum):
    """Reasons of the Suspended condition."""

    SUSPENDED_BY_USER = "SuspendedByUser"
    """Reason for Suspended=True when spec.scheduling.suspend is true."""
    QUEUED_BY_KUEUE = "QueuedByKueue"
    """Reason for Suspended=True while Kueue holds the job for quota."""
    EVICTED_BY_KUEUE = "EvictedByKueue"
    """Reason for Suspended=True after Kueue evicted the running job (preempted by higher
    priority work, for example); it resumes from its last sealed checkpoint once readmitted."""
    RESUMED = "Resumed"
    """Reason for Suspended=False once the job runs again."""


class PublishedReason(StrEnum):
    """Reasons of the Published condition."""

    ARTIFACT_PUBLISHED = "ArtifactPublished"
    """Reason for Published=True when the signed ModelArtifact was written."""
    GATES_FAILED = "GatesFailed"
    """Reason for Published=True when an evaluation gate failed, as the operator judged it from
    the job's thresholds and the trainer's measurements: the artifact is signed as a Candidate
    that admission never lets anyone approve; the message names the gates."""
    SIGNING_FAILED = "SigningFailed"
    """Reason for Published=False when the signer (Vault transit or the local key) refused or
    was unreachable (retried)."""
    RESULT_INVALID = "ResultInvalid"
    """Reason for Published=False when the trainer's result does not agree with the job (data
    digest, manifest digest, file list): nothing is signed."""
    ARTIFACT_NAME_TAKEN = "ArtifactNameTaken"
    """Reason for Published=False when a ModelArtifact of the job's name belongs to another job."""


class DataDeletedReason(StrEnum):
    """Reasons of the DataDeleted condition."""

    DELETIONS_PENDING = "DeletionsPending"
    """Reason for DataDeleted=False while deletions are scheduled but not yet due."""
    DELETIONS_COMPLETE = "DeletionsComplete"
    """Reason for DataDeleted=True when every scheduled deletion has a receipt."""
    DELETION_FAILED = "DeletionFailed"
    """Reason for DataDeleted=False when a due deletion failed or could not be verified (retried)."""


class DomainConditionType(StrEnum):
    """Condition types of a DataDomain."""

    READY = "Ready"
    """True when the domain's jobs can run: its workload namespace is sealtune's, made for it."""


class DomainReadyReason(StrEnum):
    """Reasons of a DataDomain's Ready condition."""

    DOMAIN_READY = "DomainReady"
    """Reason for Ready=True when every reference of the domain resolved."""
    RUNTIME_CLASS_NOT_FOUND = "RuntimeClassNotFound"
    """Reason for Ready=False when spec.placement.confidentialRuntimeClassName names no RuntimeClass."""
    ENCRYPTION_KEY_NOT_FOUND = "EncryptionKeyNotFound"
    """Reason for Ready=False when spec.encryption.vaultTransit.keyName does not exist in Vault."""
    VAULT_UNAVAILABLE = "VaultUnavailable"
    """Reason for Ready=Unknown when Vault cannot be reached to check the key."""
    WORKLOAD_NAMESPACE_CONFLICT = "WorkloadNamespaceConflict"
    """Reason for Ready=False when the domain's workload namespace exists but sealtune did not
    make it for this domain: no job of the domain runs until that is resolved."""


class ArtifactConditionType(StrEnum):
    """Condition types of a ModelArtifact."""

    VERIFIED = "Verified"
    """True when the signature is valid for the manifest and the manifest lists exactly spec.digests.files."""


class VerifiedReason(StrEnum):
    """Reasons of a ModelArtifact's Verified condition."""

    SIGNATURE_VALID = "SignatureValid"
    """Reason for Verified=True when the signature and every digest check out."""
    SIGNATURE_INVALID = "SignatureInvalid"
    """Reason for Verified=False when the signature does not verify with the signer's key."""
    DIGEST_MISMATCH = "DigestMismatch"
    """Reason for Verified=False when a file's digest differs from the signed manifest."""
    KEY_UNKNOWN = "KeyUnknown"
    """Reason for Verified=False when spec.signature.keyID names no key the operator trusts."""


ALL_REASONS: tuple[type[StrEnum], ...] = (
    PolicyAdmittedReason,
    SecretsReadyReason,
    ScheduledReason,
    RunningReason,
    SucceededReason,
    FailedReason,
    SuspendedReason,
    QueueAdmittedReason,
    PublishedReason,
    DataDeletedReason,
    DomainReadyReason,
    VerifiedReason,
)
"""Every reason enum, for tests that hold them to the CamelCase pattern."""
