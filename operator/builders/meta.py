"""Metadata every child carries: its name in the domain's workload namespace, and labels that
tie it to its FineTuneJob. Children live in another namespace than their job, where owner
references cannot reach: the job's finalizer deletes them (custody.py), found by these labels
and names."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..names import (
    LABEL_COMPONENT,
    LABEL_DOMAIN,
    LABEL_JOB,
    LABEL_JOB_NAMESPACE,
    LABEL_JOB_UID,
    MANAGED_BY,
    Workload,
    workload_namespace,
)


def domain_namespace(domain: DataDomain) -> str:
    return workload_namespace(domain.metadata["name"], domain.spec.workload_namespace)


def workload_of(job: FineTuneJob, domain: DataDomain) -> Workload:
    meta = job.metadata
    return Workload.of(meta["name"], meta.get("uid", ""), meta["namespace"], domain_namespace(domain))


def job_labels(job: FineTuneJob, component: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "sealtune-trainer",
        LABEL_COMPONENT: component,
        LABEL_JOB: job.metadata["name"],
        LABEL_JOB_NAMESPACE: job.metadata["namespace"],
        LABEL_JOB_UID: job.metadata.get("uid", ""),
        LABEL_DOMAIN: job.spec.domain_ref.name,
    }


def selector_labels(job: FineTuneJob) -> dict[str, str]:
    """The labels that select a job's pods; stable for the job's whole life. The uid, not the
    name: jobs of several teams share the workload namespace."""
    return {LABEL_JOB_UID: job.metadata.get("uid", ""), LABEL_COMPONENT: "worker"}


def child_metadata(job: FineTuneJob, workload: Workload, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": workload.namespace, "labels": job_labels(job, component)}
