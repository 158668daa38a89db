"""The headless Service that gives each worker pod a stable DNS name for rendezvous."""

from __future__ import annotations

from typing import Any

from .. import names
from ..api.v1alpha1 import FineTuneJob
from ..settings import Settings
from .meta import child_metadata, selector_labels


def rendezvous_service(job: FineTuneJob, settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(job, names.rendezvous_service(job.metadata["name"]), "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(job),
            # Workers must find each other before any of them is Ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": settings.rendezvous_port, "protocol": "TCP"}],
        },
    }
