"""The job's own ServiceAccount: its identity towards Vault and nothing else."""

from __future__ import annotations

from typing import Any

from .. import names
from ..api.v1alpha1 import FineTuneJob
from .meta import child_metadata


def service_account(job: FineTuneJob) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(job, names.service_account(job.metadata["name"]), "identity"),
        # Pods get a projected token with audience "vault" instead of the API-server token.
        "automountServiceAccountToken": False,
    }
