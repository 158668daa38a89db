"""The Indexed Job that runs a FineTuneJob's workers: one completion index per worker, placed
only where the domain allows, under Pod Security "restricted"."""

from __future__ import annotations

from typing import Any

from sealtune_trainer.errors import PERMANENT_EXIT_CODES as TRAINER_PERMANENT_EXIT_CODES

from .. import names
from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..names import Workload
from ..settings import Settings
from . import mounts, vault
from .meta import child_metadata, selector_labels, workload_of

REGION_LABEL = "topology.kubernetes.io/region"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_RESOURCE = "nvidia.com/gpu"
TRAINER_CONTAINER = "trainer"
# Exit codes that no retry can fix: the trainer's own list (a refused config, data or a base
# model that failed verification, outputs already there); for the init container, a refusal by
# Vault or a missing secret path.
PERMANENT_EXIT_CODES = {TRAINER_CONTAINER: list(TRAINER_PERMANENT_EXIT_CODES), vault.INIT_CONTAINER: [2]}
RUN_AS = 65532
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""Pod Security "restricted", as every sealtune pod in a workload namespace runs."""
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def node_affinity(domain: DataDomain) -> dict[str, Any] | None:
    """Required node affinity: any of the domain's pools (ORed terms), each within its regions."""
    placement = domain.spec.placement
    region = (
        [{"key": REGION_LABEL, "operator": "In", "values": list(placement.regions)}]
        if placement.regions
        else []
    )
    pools = [[e.to_json() for e in term.match_expressions] for term in placement.node_pools] or [[]]
    terms = [{"matchExpressions": pool + region} for pool in pools if pool + region]
    if not terms:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def tolerations(job: FineTuneJob, domain: DataDomain) -> list[dict[str, Any]]:
    result = [t.to_json() for t in domain.spec.placement.tolerations]
    if job.spec.resources.gpus_per_worker > 0:
        result.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return result


def rendezvous_env(job: FineTuneJob, workload: Workload, settings: Settings) -> list[dict[str, Any]]:
    resources = job.spec.resources
    procs = max(resources.gpus_per_worker, 1)
    service = f"{workload.service}.{workload.namespace}.svc.{settings.cluster_domain}"
    master = f"{workload.worker_hostname(0)}.{service}"
    return [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(settings.rendezvous_port)},
        {"name": "NNODES", "value": str(resources.workers)},
        {"name": "NPROC_PER_NODE", "value": str(procs)},
        {"name": "WORLD_SIZE", "value": str(resources.workers * procs)},
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{names.COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
    ]


def trainer_command(job: FineTuneJob) -> list[str]:
    config = f"{mounts.CONFIG_DIR}/{mounts.CONFIG_FILE}"
    resources = job.spec.resources
    if resources.workers * max(resources.gpus_per_worker, 1) == 1:
        return ["python", "-m", "sealtune_trainer", "--config", config]
    return [
        "torchrun",
        "--nnodes=$(NNODES)",
        "--nproc-per-node=$(NPROC_PER_NODE)",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        "sealtune_trainer",
        "--config",
        config,
    ]


def _resources(job: FineTuneJob, settings: Settings) -> dict[str, Any]:
    spec = job.spec.resources
    amounts: dict[str, str] = {
        "cpu": spec.cpu or settings.default_cpu,
        "memory": spec.memory or settings.default_memory,
    }
    if spec.gpus_per_worker > 0:
        amounts[GPU_RESOURCE] = str(spec.gpus_per_worker)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _volumes(
    job: FineTuneJob, domain: DataDomain, workload: Workload
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and the trainer's mounts of them. Every memory-backed volume has a size limit."""
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": workload.config_map}},
        {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    mounts_: list[dict[str, Any]] = [
        {"name": "config", "mountPath": mounts.CONFIG_DIR, "readOnly": True},
        {"name": "secrets", "mountPath": mounts.SECRETS_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": mounts.SCRATCH_DIR},
        {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 (the pod's own shm),
    ]
    claims = []
    if domain.spec.source.pvc is not None:
        source = domain.spec.source.pvc
        claims.append(("data", source.claim_name, source.path, mounts.DATA_DIR, True))
    if job.spec.base_model.pvc is not None:
        model = job.spec.base_model.pvc
        claims.append(("model", model.claim_name, model.path, mounts.MODEL_DIR, True))
    output = job.spec.output.storage
    claims.append(("output", output.claim_name, output.path, mounts.OUTPUT_DIR, False))
    for volume, claim, path, mount_path, read_only in claims:
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mount = {"name": volume, "mountPath": mount_path, "readOnly": read_only}
        if path not in (".", ""):
            mount["subPath"] = path
        mounts_.append(mount)
    return volumes, mounts_


def vault_init_container(settings: Settings) -> dict[str, Any]:
    """Logs in to Vault with the pod's audience-bound token (mounted only here, never in the
    trainer) and fills the memory volume; see sealtune_trainer.vault_init."""
    return {
        "name": vault.INIT_CONTAINER,
        "image": settings.trainer_image,
        "command": [
            "python",
            "-m",
            "sealtune_trainer.vault_init",
            "--config",
            f"{mounts.CONFIG_DIR}/{vault.INIT_CONFIG_FILE}",
        ],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": mounts.CONFIG_DIR, "readOnly": True},
            {"name": "secrets", "mountPath": mounts.SECRETS_DIR},
            {"name": "vault-token", "mountPath": mounts.VAULT_TOKEN_DIR, "readOnly": True},
        ],
        "securityContext": RESTRICTED_CONTAINER,
    }


def vault_token_volume(job: FineTuneJob, settings: Settings) -> dict[str, Any]:
    """The pod's ServiceAccount token for Vault alone: bound to the audience Vault's roles
    check, and expiring with the job's deadline at the latest (10 minutes is the API minimum)."""
    seconds = max(min(job.spec.scheduling.active_deadline_seconds, 3600), 600)
    return {
        "name": "vault-token",
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": settings.vault_audience,
                        "expirationSeconds": seconds,
                        "path": "token",
                    }
                }
            ]
        },
    }


def indexed_job(
    job: FineTuneJob, domain: DataDomain, settings: Settings, *, exists: bool = False
) -> dict[str, Any]:
    """The Job. ``exists`` tells whether it was created already: then a Kueue-managed job's
    ``suspend`` is left to Kueue instead of being applied again."""
    spec, workload = job.spec, workload_of(job, domain)
    scheduling = spec.scheduling
    volumes, volume_mounts = _volumes(job, domain, workload)
    placement = domain.spec.placement
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": workload.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "subdomain": workload.service,
        "securityContext": dict(RESTRICTED_POD),
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "image": settings.trainer_image,
                "command": trainer_command(job),
                "env": [
                    *rendezvous_env(job, workload, settings),
                    {"name": "HOME", "value": mounts.SCRATCH_DIR},
                    {"name": "HF_HUB_OFFLINE", "value": "1"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                ],
                "ports": [
                    {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"},
                    {"name": "rendezvous", "containerPort": settings.rendezvous_port, "protocol": "TCP"},
                ],
                "resources": _resources(job, settings),
                "volumeMounts": volume_mounts,
                "terminationMessagePath": mounts.TERMINATION_MESSAGE_PATH,
                "terminationMessagePolicy": "File",
                "securityContext": RESTRICTED_CONTAINER,
            }
        ],
        "volumes": volumes,
    }
    if vault.plan(job, domain) is not None:
        pod_spec["initContainers"] = [vault_init_container(settings)]
        volumes.append(vault_token_volume(job, settings))
    affinity = node_affinity(domain)
    if affinity:
        pod_spec["affinity"] = affinity
    pod_tolerations = tolerations(job, domain)
    if pod_tolerations:
        pod_spec["tolerations"] = pod_tolerations
    if placement.require_confidential_compute:
        pod_spec["runtimeClassName"] = placement.confidential_runtime_class_name
        pod_spec["nodeSelector"] = dict(settings.confidential_node_labels)
    if scheduling.priority_class_name:
        pod_spec["priorityClassName"] = scheduling.priority_class_name

    containers = {c["name"] for c in [*pod_spec["containers"], *pod_spec.get("initContainers", [])]}
    metadata = child_metadata(job, workload, workload.batch_job, "workload")
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.resources.workers,
        "parallelism": spec.resources.workers,
        "backoffLimit": scheduling.backoff_limit,
        "activeDeadlineSeconds": scheduling.active_deadline_seconds,
        "podFailurePolicy": {
            "rules": [
                *(
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": container, "operator": "In", "values": codes},
                    }
                    for container, codes in PERMANENT_EXIT_CODES.items()
                    if container in containers
                ),
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {
                "labels": {**spec.pod_metadata.labels, **metadata["labels"], **selector_labels(job)},
                **(
                    {"annotations": dict(spec.pod_metadata.annotations)}
                    if spec.pod_metadata.annotations
                    else {}
                ),
            },
            "spec": pod_spec,
        },
    }
    if scheduling.queue_name:
        metadata["labels"][KUEUE_QUEUE_LABEL] = scheduling.queue_name
        if not exists:
            job_spec["suspend"] = True
    else:
        job_spec["suspend"] = scheduling.suspend
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
