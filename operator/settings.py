"""The operator's settings: read once at start from SEALTUNE_* environment variables."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class Settings(BaseModel):
    """Everything the operator's behaviour depends on besides the objects it watches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[Name, ...] = ()
    """Namespaces whose FineTuneJobs this operator handles; empty means every namespace."""

    operator_namespace: Name = "sealtune-system"
    """Where the operator keeps its own objects (the webhook's certificate)."""

    field_manager: Name = "sealtune-operator"
    """The one field manager of every server-side apply the operator sends."""

    trainer_image: Name = "sealtune-trainer:dev"
    """Image of the trainer (and of its Vault init container)."""

    monitoring_namespace: Name = "monitoring"
    """Namespace whose pods may scrape trainer metrics through each job's NetworkPolicy."""

    dns_namespace: Name = "kube-system"
    """Namespace of the cluster DNS pods that each job's NetworkPolicy lets trainers reach."""

    cluster_domain: Name = "cluster.local"

    rendezvous_port: int = Field(29500, ge=1, le=65535)
    """torchrun / DeepSpeed rendezvous port, opened only between a job's own pods."""

    metrics_port: int = Field(9400, ge=1, le=65535)
    """The trainer's Prometheus port."""

    default_cpu: Name = "4"
    default_memory: Name = "16Gi"

    confidential_node_labels: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/cc.ready.state": "true"}
    )
    """Labels a node carries when its GPUs are in confidential-computing mode and ready."""

    vault_address: str | None = None
    """Vault (or OpenBao) address trainers reach; the domain's network.vaultAddress wins."""

    webhook_address: str | None = None
    """Address the admission webhook listens on and the API server calls (None: no webhook)."""

    webhook_port: int = Field(9443, ge=1, le=65535)

    webhook_host: str | None = None
    """Host name or IP in the webhook's URL and certificate; defaults to webhook_address."""

    max_api_concurrency: int = Field(32, ge=1, le=1024)
    """Requests in flight to the API server at once; more wait (429s are honoured as well)."""

    peering_name: str | None = None
    """kopf peering object's name for several replicas with one active; None runs standalone."""

    peering_priority: int = Field(0, ge=0, le=1_000_000)
    """kopf peering priority: among replicas, the highest handles objects and the others wait."""

    peering_lifetime_seconds: int = Field(15, ge=5, le=600)
    """How long a silent replica still counts as alive: the longest a handover waits."""

    liveness_port: int | None = Field(None, ge=1, le=65535)
    """Port of the liveness endpoint (/healthz); None serves none."""

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"SEALTUNE_{name.upper()}")
            if raw is None:
                continue
            if name == "namespaces":
                values[name] = tuple(n.strip() for n in raw.split(",") if n.strip())
            elif name == "confidential_node_labels":
                values[name] = dict(pair.split("=", 1) for pair in raw.split(",") if pair)
            elif field.annotation in (int, int | None):
                values[name] = int(raw)
            else:
                values[name] = raw
        return cls.model_validate(values)
