"""Deterministic names of a FineTuneJob's children: a handler that runs twice finds, never
duplicates, what the first run made (so no generateName anywhere)."""

from __future__ import annotations

LABEL_JOB = "sealtune.dev/finetunejob"
LABEL_DOMAIN = "sealtune.dev/domain"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sealtune", "app.kubernetes.io/part-of": "sealtune"}
ANNOTATION_DESIRED_HASH = "sealtune.dev/companions-hash"
"""On the Job: the hash of its companions' desired state when they were last applied."""
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def service_account(job: str) -> str:
    return f"{job}-trainer"


def config_map(job: str) -> str:
    return f"{job}-trainer-config"


def network_policy(job: str) -> str:
    return f"{job}-isolation"


def rendezvous_service(job: str) -> str:
    return job


def batch_job(job: str) -> str:
    return job


def worker_hostname(job: str, index: int) -> str:
    """The hostname the Job controller gives the pod of an Indexed Job's completion index."""
    return f"{batch_job(job)}-{index}"


# Workload namespaces (one per DataDomain, tenants hold no rights there; builders/admission.py).
WORKLOAD_NAMESPACE_LABEL = "sealtune.dev/workload-of"
"""On a workload namespace: which DataDomain owns it (its name, or a hashed form when longer
than a label value may be: see workload_label_value)."""
JOB_CONTROLLER_USERNAME = "system:serviceaccount:kube-system:job-controller"
"""Who creates a Job's pods (kube-controller-manager with --use-service-account-credentials)."""


def workload_label_value(domain: str) -> str:
    """The WORKLOAD_NAMESPACE_LABEL value for a domain: its name, which may be a 253-character
    DNS subdomain, cut to a label value's 63 characters with a hash when longer."""
    if len(domain) <= 63:
        return domain
    import hashlib

    return f"{domain[:52].rstrip('.-')}-{hashlib.sha256(domain.encode()).hexdigest()[:10]}"
