"""Metadata every child carries: its name, labels that tie it to its FineTuneJob, and the
owner reference that lets the garbage collector delete it with the job."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import API_VERSION, FineTuneJob
from ..names import LABEL_COMPONENT, LABEL_DOMAIN, LABEL_JOB, MANAGED_BY


def job_labels(job: FineTuneJob, component: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "sealtune-trainer",
        LABEL_COMPONENT: component,
        LABEL_JOB: job.metadata["name"],
        LABEL_DOMAIN: job.spec.domain_ref.name,
    }


def selector_labels(job: FineTuneJob) -> dict[str, str]:
    """The labels that select a job's pods; stable for the job's whole life."""
    return {LABEL_JOB: job.metadata["name"], LABEL_COMPONENT: "worker"}


def owner_reference(job: FineTuneJob) -> dict[str, Any]:
    # The same reference kopf.adopt() writes; built here so builders stay pure.
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "name": job.metadata["name"],
        "uid": job.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(job: FineTuneJob, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job.metadata["namespace"],
        "labels": job_labels(job, component),
        "ownerReferences": [owner_reference(job)],
    }
