"""The job's own ServiceAccount: its identity towards Vault and nothing else."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import DataDomain, FineTuneJob
from .meta import child_metadata, workload_of


def service_account(job: FineTuneJob, domain: DataDomain) -> dict[str, Any]:
    workload = workload_of(job, domain)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(job, workload, workload.service_account, "identity"),
        # Pods get a projected token with audience "vault" instead of the API-server token.
        "automountServiceAccountToken": False,
    }
