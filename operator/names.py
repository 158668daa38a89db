"""Deterministic names of a FineTuneJob's children: a handler that runs twice finds, never
duplicates, what the first run made (so no generateName anywhere).

A job's workload runs in its domain's workload namespace, which jobs of many teams share: its
children are named after the job's name and uid, so that two teams' jobs of the same name, or a
job re-created under an old name, never meet each other's objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

LABEL_JOB = "sealtune.dev/finetunejob"
LABEL_JOB_NAMESPACE = "sealtune.dev/finetunejob-namespace"
LABEL_JOB_UID = "sealtune.dev/finetunejob-uid"
LABEL_DOMAIN = "sealtune.dev/domain"
LABEL_WORKLOAD_OF = "sealtune.dev/workload-of"
"""On a namespace sealtune created as a domain's workload namespace: the domain's name."""
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sealtune", "app.kubernetes.io/part-of": "sealtune"}
ANNOTATION_DESIRED_HASH = "sealtune.dev/companions-hash"
ANNOTATION_REQUESTED_BY = "sealtune.dev/requested-by"
"""On a FineTuneJob: the user who created it, stamped by admission (builders/result_admission.py)."""
"""On the Job: the hash of its companions' desired state when they were last applied."""
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
UID_CHARS = 8
"""Characters of the job's uid in its children's names: 32 random bits, unique among the jobs of
one namespace, and the names stay valid DNS labels (a 48-character job name, '-', 8, and the
'-<index>' of a pod's hostname fit in 63)."""


def workload_namespace(domain: str, requested: str | None = None) -> str:
    """The domain's workload namespace: spec.workloadNamespace, or sealtune-<domain> (a domain's
    name may be a dotted subdomain, a namespace only a label; long names are cut with a hash)."""
    if requested:
        return requested
    name = "sealtune-" + domain.replace(".", "-")
    if len(name) > 63:
        name = f"{name[:46]}-{hashlib.sha256(domain.encode()).hexdigest()[:16]}"
    return name


@dataclass(frozen=True)
class Workload:
    """Where one FineTuneJob's workload lives and what its children are called."""

    namespace: str
    """The domain's workload namespace."""
    base: str
    """<job name>-<first characters of its uid>."""
    job_namespace: str
    """The FineTuneJob's own namespace (its team's)."""

    @classmethod
    def of(cls, job_name: str, uid: str, job_namespace: str, namespace: str) -> Workload:
        return cls(namespace, f"{job_name}-{uid.replace('-', '')[:UID_CHARS]}", job_namespace)

    @property
    def output_dir(self) -> str:
        """The run's own directory under the output claim's path: <team namespace>/<base>."""
        return f"{self.job_namespace}/{self.base}"

    @property
    def service_account(self) -> str:
        return f"{self.base}-trainer"

    @property
    def config_map(self) -> str:
        return f"{self.base}-trainer-config"

    @property
    def network_policy(self) -> str:
        return f"{self.base}-isolation"

    @property
    def service(self) -> str:
        return self.base

    @property
    def batch_job(self) -> str:
        return self.base

    @property
    def children(self) -> tuple[tuple[str, str], ...]:
        """(kind, name) of each child, in the order a cleanup deletes them: the workers first,
        the identity last."""
        return (
            ("Job", self.batch_job),
            ("Service", self.service),
            ("NetworkPolicy", self.network_policy),
            ("ConfigMap", self.config_map),
            ("ServiceAccount", self.service_account),
        )

    def worker_hostname(self, index: int) -> str:
        """The hostname the Job controller gives the pod of an Indexed Job's completion index."""
        return f"{self.batch_job}-{index}"


JOB_CONTROLLER_USERNAME = "system:serviceaccount:kube-system:job-controller"
"""Who creates a Job's pods (kube-controller-manager with --use-service-account-credentials)."""


def workload_label_value(domain: str) -> str:
    """The LABEL_WORKLOAD_OF value for a domain: its name, which may be a 253-character DNS
    subdomain, cut to a label value's 63 characters with a hash when longer."""
    if len(domain) <= 63:
        return domain
    return f"{domain[:52].rstrip('.-')}-{hashlib.sha256(domain.encode()).hexdigest()[:10]}"
