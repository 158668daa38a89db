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
    """The one field manager of every create, patch and server-side apply the operator sends."""

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
    """Vault (or OpenBao) address trainers reach; the domain's network.vaultAddress wins. None:
    no Vault, and jobs that need one wait with SecretsReady=False."""

    vault_operator_address: str | None = None
    """Vault's address as the operator reaches it; defaults to vault_address."""

    vault_auth_mount: Name = "kubernetes"
    """Mount path of Vault's Kubernetes auth method: the operator and the trainers log in there."""

    vault_role: Name = "sealtune-operator"
    """The Kubernetes-auth role the operator logs in with (see deploy/vault/)."""

    vault_audience: Name = "vault"
    """Audience of the ServiceAccount tokens presented to Vault, the operator's and the pods'."""

    vault_jwt_path: Name = "/var/run/secrets/sealtune.dev/vault/token"
    """The operator's projected ServiceAccount token for its Kubernetes-auth login."""

    vault_token_file: str | None = None
    """Development only: a file holding a Vault token, used instead of the Kubernetes login."""

    vault_ca_file: str | None = None
    """CA bundle that signs Vault's certificate; None uses the system's."""

    audit_path: str | None = "/var/lib/sealtune/audit/audit.jsonl"
    """The hash-chained audit log's file (on a PVC in the chart); empty: none."""

    audit_stdout: bool = True
    """Also print each audit entry as a JSON line on stdout, for log shippers."""

    signing_transit_key: Name = "sealtune-signing"
    """Vault transit key (ecdsa-p256) that signs artifacts when Vault is configured."""

    signing_transit_mount: Name = "transit"

    signing_secret: Name = "sealtune-signing-key"  # noqa: S105 (a Secret's name)
    """Without Vault: the Secret in operator_namespace holding the signing key (made on first use)."""

    job_writers: tuple[Name, ...] = ()
    """Users besides the operator that change the spec of its batch Jobs in workload namespaces:
    Kueue's (it unsuspends an admitted Job and merges its flavor's node labels), e.g.
    system:serviceaccount:kueue-system:kueue-controller-manager. The workload admission policies
    refuse everyone else."""

    webhook_address: str | None = None
    """Address the admission webhook listens on and the API server calls (None: no webhook)."""

    webhook_port: int = Field(9443, ge=1, le=65535)

    webhook_host: str | None = None
    """Host name or IP in the webhook's URL and certificate; defaults to webhook_address."""

    max_api_concurrency: int = Field(32, ge=1, le=1024)
    """Requests in flight to the API server at once; more wait (429s are honoured as well)."""

    max_concurrent_applies: int = Field(64, ge=1, le=4096)
    """FineTuneJobs whose children are built and sent at once; more wait their turn, and jobs
    not yet applied wait before they are even parsed. Twice the API concurrency keeps every
    request slot busy, while a burst of thousands of new jobs holds only this many in memory."""

    peering_name: str | None = None
    """kopf peering object's name for several replicas with one active; None runs standalone."""

    peering_priority: int = Field(0, ge=0, le=1_000_000)
    """kopf peering priority: among replicas, the highest handles objects and the others wait."""

    peering_lifetime_seconds: int = Field(15, ge=5, le=600)
    """How long a silent replica still counts as alive: the longest a handover waits."""

    liveness_port: int | None = Field(None, ge=1, le=65535)
    """Port of the liveness endpoint (/healthz); None serves none."""

    operator_metrics_port: int | None = Field(None, ge=1, le=65535)
    """Port of the operator's own Prometheus endpoint (/metrics, every interface); None serves
    none. (metrics_port is the trainers'.)"""

    webhook_service: str | None = None
    """Name of the Service in operator_namespace through which the API server calls the webhook
    (in a cluster: the API server finds the pods through its endpoints and needs no cluster
    DNS); None registers the webhook by URL (webhook_host), as outside a cluster."""

    webhook_service_port: int = Field(443, ge=1, le=65535)
    """That Service's port."""
    webhook_configuration: str = "validate.sealtune.dev"
    """The ValidatingWebhookConfiguration whose webhooks the operator points at itself. It is
    installed with the operator (the chart's templates/webhook.yaml); the operator only patches it."""

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(f"SEALTUNE_{name.upper()}")
            if raw is None:
                continue
            if name in ("namespaces", "job_writers"):
                values[name] = tuple(n.strip() for n in raw.split(",") if n.strip())
            elif name == "confidential_node_labels":
                values[name] = dict(pair.split("=", 1) for pair in raw.split(",") if pair)
            elif field.annotation in (int, int | None):
                values[name] = int(raw)
            elif field.annotation is bool:
                values[name] = raw.strip().lower() in ("1", "true", "yes")
            elif name == "audit_path":
                values[name] = raw or None
            else:
                values[name] = raw
        return cls.model_validate(values)
