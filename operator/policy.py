"""Whether a FineTuneJob may run under its DataDomain: a chain of pure checks, each returning
the violations it finds with the field to change and how. The webhook refuses a job with any
violation; the reconcile reports the first as PolicyAdmitted=False and creates nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .api.v1alpha1 import DataDomain, FineTuneJob
from .api.v1alpha1.conditions import PolicyAdmittedReason as Reason
from .api.v1alpha1.meta import LabelSelector
from .names import Workload


@dataclass(frozen=True)
class Violation:
    field: str
    reason: Reason
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Subject:
    """What a check looks at: the job, its domain, and the labels of the job's namespace."""

    job: FineTuneJob
    domain: DataDomain
    namespace_labels: Mapping[str, str]

    @property
    def namespace(self) -> str:
        return str(self.job.metadata["namespace"])


Check = Callable[[Subject], list[Violation]]


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for expr in selector.match_expressions:
        present, value = expr.key in labels, labels.get(expr.key)
        ok = {
            "In": present and value in expr.values,
            "NotIn": not present or value not in expr.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[expr.operator]
        if not ok:
            return False
    return True


def check_namespace(s: Subject) -> list[Violation]:
    access = s.domain.spec.access
    if s.namespace in access.namespaces:
        return []
    if access.namespace_selector is not None and selector_matches(
        access.namespace_selector, s.namespace_labels
    ):
        return []
    return [
        Violation(
            "metadata.namespace",
            Reason.NAMESPACE_NOT_ALLOWED,
            f"DataDomain {s.domain.metadata['name']} does not admit namespace {s.namespace}; run the job in "
            "an admitted namespace, or ask the domain's admin to add it to spec.access",
        )
    ]


def allowed_vault_paths(domain: DataDomain, namespace: str) -> list[str]:
    """The domain's spec.access.vaultPaths for a job in ``namespace``."""
    return [prefix.replace("{namespace}", namespace) for prefix in domain.spec.access.vault_paths]


def path_under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it: ``a/b`` covers ``a/b`` and ``a/b/c`` but not
    ``a/bc``; ``a/b/`` covers what starts with it."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(f"{prefix}/")


def check_secret_paths(s: Subject) -> list[Violation]:
    # The job's Vault policy grants read on each of these paths: only the domain's admin may
    # say which (a team could otherwise name another team's secrets).
    allowed = allowed_vault_paths(s.domain, s.namespace)
    ask = "ask the domain's admin to add a prefix for it to spec.access.vaultPaths"
    fix = f"use a path under one of {', '.join(allowed)}, or {ask}" if allowed else f"it admits none: {ask}"
    return [
        Violation(
            f"spec.secrets[{i}].vaultPath",
            Reason.SECRET_PATH_NOT_ALLOWED,
            f"Vault path {secret.vault_path} is not under DataDomain {s.domain.metadata['name']}'s "
            f"spec.access.vaultPaths; {fix}",
        )
        for i, secret in enumerate(s.job.spec.secrets)
        if not any(path_under(secret.vault_path, prefix) for prefix in allowed)
    ]


def check_method(s: Subject) -> list[Violation]:
    method, allowed = s.job.spec.method.type, s.domain.spec.methods
    if method in allowed:
        return []
    return [
        Violation(
            "spec.method.type",
            Reason.METHOD_NOT_ALLOWED,
            f"method {method} is not allowed by DataDomain {s.domain.metadata['name']}; use one of "
            f"{', '.join(allowed)}",
        )
    ]


def check_limits(s: Subject) -> list[Violation]:
    limits, resources, training = s.domain.spec.limits, s.job.spec.resources, s.job.spec.training
    found = []

    def over(field: str, value: int | None, limit: int | None, what: str) -> None:
        if value is not None and limit is not None and value > limit:
            found.append(
                Violation(
                    field,
                    Reason.LIMIT_EXCEEDED,
                    f"{what} {value} exceeds the domain's limit of {limit}; lower it to {limit} or less",
                )
            )

    over("spec.resources.workers", resources.workers, limits.max_workers, "workers")
    over(
        "spec.resources.gpusPerWorker",
        resources.gpus_per_worker,
        limits.max_gpus_per_worker,
        "GPUs per worker",
    )
    over(
        "spec.resources.gpusPerWorker",
        resources.workers * resources.gpus_per_worker,
        limits.max_total_gpus,
        "GPUs in total (workers x gpusPerWorker)",
    )
    over("spec.training.epochs", training.epochs, limits.max_epochs, "epochs")
    return found


def check_privacy(s: Subject) -> list[Violation]:
    required, job = s.domain.spec.privacy, s.job.spec
    dp, gates = job.privacy.differential_privacy, job.evaluation
    found = []
    if required.require_differential_privacy and dp is None:
        found.append(
            Violation(
                "spec.privacy.differentialPrivacy",
                Reason.PRIVACY_REQUIRED,
                "the domain requires differential privacy; set spec.privacy.differentialPrivacy",
            )
        )
    if dp is not None and required.max_epsilon is not None and dp.target_epsilon > required.max_epsilon:
        found.append(
            Violation(
                "spec.privacy.differentialPrivacy.targetEpsilon",
                Reason.PRIVACY_REQUIRED,
                f"target epsilon {dp.target_epsilon} exceeds the domain's maximum "
                f"{required.max_epsilon}; lower it",
            )
        )
    for field, wanted, limit in (
        ("spec.evaluation.maxCanaryExposure", gates.max_canary_exposure, required.max_canary_exposure),
        (
            "spec.evaluation.maxMembershipInferenceAUC",
            gates.max_membership_inference_auc,
            required.max_membership_inference_auc,
        ),
    ):
        if limit is not None and (wanted is None or wanted > limit):
            found.append(
                Violation(
                    field,
                    Reason.PRIVACY_REQUIRED,
                    f"the domain requires this gate at {limit} or stricter; set it to {limit} or less",
                )
            )
    return found


def check_output_claim(s: Subject) -> list[Violation]:
    source = s.domain.spec.source.pvc
    if source is None or s.job.spec.output.storage.claim_name != source.claim_name:
        return []
    return [
        Violation(
            "spec.output.storage.claimName",
            Reason.OUTPUT_CLAIM_NOT_ALLOWED,
            f"claim {source.claim_name} holds DataDomain {s.domain.metadata['name']}'s data set, which "
            "jobs only read; name the output claim the domain's admin provisioned for results",
        )
    ]


def check_checkpoints(s: Subject) -> list[Violation]:
    if s.job.spec.training.checkpoint_every_steps is None or s.domain.spec.encryption.vault_transit:
        return []
    return [
        Violation(
            "spec.training.checkpointEverySteps",
            Reason.CHECKPOINTS_NEED_A_KEY,
            f"checkpoints are sealed with the job's own key, which Vault transit makes for domains "
            f"encrypted with it; DataDomain {s.domain.metadata['name']} is not, so unset "
            "checkpointEverySteps (or the domain's admin sets spec.encryption.vaultTransit)",
        )
    ]


def check_queue(s: Subject) -> list[Violation]:
    placement, name = s.domain.spec.placement, s.domain.metadata["name"]
    queue = s.job.spec.scheduling.queue_name
    field = "spec.scheduling.queueName"
    open_to = [q.name for q in placement.queues if not q.namespaces or s.namespace in q.namespaces]
    choice = f"one of {', '.join(open_to)}" if open_to else "none for this namespace: ask the domain's admin"
    if queue is None:
        if not placement.require_queue:
            return []
        return [
            Violation(
                field,
                Reason.QUEUE_REQUIRED,
                f"DataDomain {name} runs jobs only through Kueue (spec.placement.requireQueue); set "
                f"queueName to {choice}",
            )
        ]
    if queue in open_to:
        return []
    return [
        Violation(
            field,
            Reason.QUEUE_NOT_ALLOWED,
            f"LocalQueue {queue} is not open to namespace {s.namespace} under DataDomain {name}'s "
            f"spec.placement.queues; use {choice}",
        )
    ]


CHECKS: tuple[Check, ...] = (
    check_namespace,
    check_secret_paths,
    check_method,
    check_limits,
    check_privacy,
    check_output_claim,
    check_checkpoints,
    check_queue,
)


def evaluate(job: FineTuneJob, domain: DataDomain, namespace_labels: Mapping[str, str]) -> list[Violation]:
    """Every violation, in the order of CHECKS; empty when the job may run."""
    subject = Subject(job, domain, namespace_labels)
    return [v for check in CHECKS for v in check(subject)]


def domain_not_found(job: FineTuneJob) -> Violation:
    name = job.spec.domain_ref.name
    return Violation(
        "spec.domainRef.name",
        Reason.DOMAIN_NOT_FOUND,
        f"DataDomain {name} does not exist; create it or name an existing domain",
    )


def workload_namespace_conflict(domain: DataDomain, namespace: str) -> Violation:
    return Violation(
        "spec.workloadNamespace",
        Reason.WORKLOAD_NAMESPACE_CONFLICT,
        f"namespace {namespace} exists but is not DataDomain {domain.metadata['name']}'s workload namespace "
        "(labelled sealtune.dev/workload-of with the domain's name, Pod Security restricted enforced), "
        "so others may hold rights in it; the domain's admin names an unused namespace in the "
        "DataDomain's spec.workloadNamespace, or a cluster admin deletes or labels that one",
    )


def foreign_job(workload: Workload) -> Violation:
    return Violation(
        "metadata.name",
        Reason.WORKLOAD_JOB_CONFLICT,
        f"Job {workload.batch_job} in the workload namespace {workload.namespace} carries this job's "
        "name and uid but the sealtune operator did not create it, so it is neither used nor "
        "changed; a cluster admin deletes it (and finds out who made it), or delete and re-create "
        "this FineTuneJob",
    )
