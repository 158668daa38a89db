"""Small builders of sealtune manifests for tests: a valid default, changed by keyword
(in the spirit of JobSet's testing wrappers)."""

from __future__ import annotations

import copy
from typing import Any

from sealtune.names import LABEL_WORKLOAD_OF, workload_label_value, workload_namespace

DIGEST = "sha256:" + "ab" * 32


def deep_merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def contains(big: Any, small: Any) -> bool:
    """Whether every field of ``small`` is in ``big`` with an equal value."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(contains, big, small))
    return bool(big == small)


def data_domain(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A domain that admits ``namespace`` and its secrets under secret/data/<namespace>/, with its
    data on claim "data" in its workload namespace."""
    base = {
        "classification": "internal",
        "source": {
            "pvc": {"claimName": "data", "path": "."},
            "manifestDigest": DIGEST,
        },
        "access": {"namespaces": [namespace], "vaultPaths": ["secret/data/{namespace}/"]},
        "methods": ["lora"],
        "placement": {
            "nodePools": [
                {"matchExpressions": [{"key": "sealtune.dev/pool", "operator": "In", "values": ["gpu"]}]}
            ]
        },
    }
    return {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "DataDomain",
        "metadata": {"name": name},
        "spec": deep_merge(base, spec),
    }


def confidential_placement() -> dict[str, Any]:
    return {
        "requireConfidentialCompute": True,
        "confidentialRuntimeClassName": "kata-qemu-nvidia-gpu-tdx",
        # kwok's pool only: a real node simulating confidential compute may share the cluster.
        "nodePools": [
            {
                "matchExpressions": [
                    {"key": "sealtune.dev/pool", "operator": "In", "values": ["confidential-gpu"]},
                    {"key": "type", "operator": "In", "values": ["kwok"]},
                ]
            }
        ],
        "regions": ["eu-west-1"],
        "tolerations": [{"key": "sealtune.dev/confidential", "operator": "Exists", "effect": "NoSchedule"}],
    }


def finetune_job(name: str, namespace: str, domain: str, **spec: Any) -> dict[str, Any]:
    base = {
        "domainRef": {"name": domain},
        "baseModel": {"pvc": {"claimName": "models", "path": "."}, "digest": DIGEST},
        "method": {"type": "lora", "lora": {"r": 8}},
        "training": {"maxSteps": 10},
        "resources": {"workers": 1, "gpusPerWorker": 1, "cpu": "1", "memory": "1Gi"},
        "output": {"storage": {"claimName": "outputs", "path": "."}},
    }
    return {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": deep_merge(base, spec),
    }


def bound_claims(
    namespace: str, names: tuple[str, ...] = ("data", "models", "outputs")
) -> list[dict[str, Any]]:
    """PersistentVolumes pre-bound to claims of these names, so pods on kwok nodes schedule.
    (hostPath volumes under a path no real node mounts: kwok nodes run nothing.)"""
    objects: list[dict[str, Any]] = []
    for claim in names:
        pv = f"{namespace}-{claim}"
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": "",
                    "hostPath": {"path": f"/nonexistent/{pv}"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
    return objects


def workload_namespace_object(domain: str) -> dict[str, Any]:
    """The domain's workload namespace as a cluster admin (or a GitOps pipeline) makes it ahead of
    the operator, to provision the domain's claims there: labelled as the domain's."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": workload_namespace(domain),
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                LABEL_WORKLOAD_OF: workload_label_value(domain),
            },
        },
    }


def domain_with_claims(name: str, namespace: str, **spec: Any) -> list[dict[str, Any]]:
    """A domain that admits ``namespace`` (see data_domain), its workload namespace and the bound
    claims "data", "models" and "outputs" there, where its jobs mount them."""
    return [
        workload_namespace_object(name),
        *bound_claims(workload_namespace(name)),
        data_domain(name, namespace, **spec),
    ]


def kwok_runtime(seconds: int) -> dict[str, Any]:
    """spec.podMetadata that makes kwok keep the workers Running for about this long (its
    pod-complete stage waits between the delay and the jitter-delay)."""
    value = f"{seconds}s"
    return {
        "annotations": {
            "pod-complete.stage.kwok.x-k8s.io/delay": value,
            "pod-complete.stage.kwok.x-k8s.io/jitter-delay": value,
        }
    }
