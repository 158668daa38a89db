"""Pure functions from (FineTuneJob, DataDomain, Settings) to the Kubernetes objects a job needs.

Nothing here performs I/O; adapters apply what these return.
"""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..settings import Settings
from .config import trainer_config_map
from .identity import service_account
from .network import network_policy
from .rendezvous import rendezvous_service
from .workload import indexed_job

Manifest = dict[str, Any]


def desired_children(
    job: FineTuneJob, domain: DataDomain, settings: Settings, wrapped_job_key: str | None = None
) -> list[Manifest]:
    """Every child object, in the order they are applied: identity and isolation first, so
    that no pod ever starts without its NetworkPolicy, and the Job last. ``wrapped_job_key`` is
    the job's data key as Vault wrapped it (status.vault.wrappedDataKey), when it has one."""
    return [
        service_account(job, domain),
        network_policy(job, domain, settings),
        trainer_config_map(job, domain, settings, wrapped_job_key),
        rendezvous_service(job, domain, settings),
        indexed_job(job, domain, settings),
    ]


__all__ = ["Manifest", "desired_children"]
