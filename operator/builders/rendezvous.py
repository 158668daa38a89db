"""The headless Service that gives each worker pod a stable DNS name for rendezvous."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..settings import Settings
from .meta import child_metadata, selector_labels, workload_of


def rendezvous_service(job: FineTuneJob, domain: DataDomain, settings: Settings) -> dict[str, Any]:
    workload = workload_of(job, domain)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(job, workload, workload.service, "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(job),
            # Workers must find each other before any of them is Ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": settings.rendezvous_port, "protocol": "TCP"}],
        },
    }
