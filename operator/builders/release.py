"""The release Job: one pod, in the domain's workload namespace, that copies an artifact's signed
files from the run's directory to a destination claim the domain names (sealtune_trainer.release
does the copy). It runs where the domain's jobs may run, under Pod Security "restricted", with no
ServiceAccount token, no Vault and no network (the namespace's default-deny policy): all it can
touch is the two mounts. Pure functions, no I/O."""

from __future__ import annotations

import json
from typing import Any

from .. import signing
from ..api.v1alpha1 import DataDomain, ModelArtifact
from ..api.v1alpha1.datadomain import ReleaseDestination
from ..names import LABEL_COMPONENT, LABEL_DOMAIN, MANAGED_BY
from ..settings import Settings
from . import mounts
from .meta import domain_namespace
from .workload import GPU_RESOURCE, RESTRICTED_CONTAINER, RESTRICTED_POD, node_affinity

LABEL_RELEASE_OF = "sealtune.dev/release-of"
"""On a release Job and its ConfigMap: the uid of the artifact whose files it copies."""
CONTAINER = "release"
CONFIG_FILE = "release.json"
SOURCE_DIR = "/var/run/sealtune/release/source"
TARGET_DIR = "/var/run/sealtune/release/target"
COMMAND = [
    "python", "-m", "sealtune_trainer.release", "--config", f"{mounts.CONFIG_DIR}/{CONFIG_FILE}",
    "--source", SOURCE_DIR, "--target", TARGET_DIR,
]  # fmt: skip
DEADLINE_SECONDS = 900
KEEP_FINISHED_SECONDS = 3600
"""The operator deletes a finished release Job once it has recorded the outcome; this is the
backstop when it cannot."""


def job_name(artifact: ModelArtifact, index: int) -> str:
    """Unique per request: the artifact's uid (names repeat across teams) and the index."""
    return f"sealtune-release-{artifact.metadata['uid']}-{index}"


def released_directory(artifact: ModelArtifact) -> str:
    """Where the files land under the destination's path: <namespace>/<name>-<uid>."""
    meta = artifact.metadata
    return f"{meta['namespace']}/{meta['name']}-{meta['uid']}"


def release_config(artifact: ModelArtifact) -> dict[str, Any]:
    return {
        "directory": released_directory(artifact),
        "files": [f.to_json() for f in artifact.spec.digests.files],
        "bundle": artifact.spec.signature.bundle,
        "signatureFile": signing.SIGNATURE_FILE,
    }


def _metadata(name: str, namespace: str, artifact: ModelArtifact, domain: DataDomain) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            **MANAGED_BY,
            LABEL_COMPONENT: "release",
            LABEL_RELEASE_OF: artifact.metadata["uid"],
            LABEL_DOMAIN: domain.metadata["name"],
        },
        "annotations": {
            "sealtune.dev/artifact": f"{artifact.metadata['namespace']}/{artifact.metadata['name']}"
        },
    }


def release_job(
    artifact: ModelArtifact,
    index: int,
    domain: DataDomain,
    destination: ReleaseDestination,
    settings: Settings,
) -> dict[str, Any]:
    """The Job for the request at ``index``; its ConfigMap has the same name."""
    name, namespace = job_name(artifact, index), domain_namespace(domain)
    source, placement = artifact.spec.storage, domain.spec.placement
    # One volume per claim: the destination may be the output claim itself.
    claims = dict.fromkeys([source.claim_name, destination.claim_name])
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": name}},
        *({"name": f"claim-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)),
    ]
    volume_of = {claim: f"claim-{i}" for i, claim in enumerate(claims)}

    def mount(claim: str, path: str, at: str, read_only: bool) -> dict[str, Any]:
        found = {"name": volume_of[claim], "mountPath": at, "readOnly": read_only}
        return found if path in (".", "") else {**found, "subPath": path}

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": dict(RESTRICTED_POD),
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.trainer_image,
                "command": list(COMMAND),
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [
                    {"name": "config", "mountPath": mounts.CONFIG_DIR, "readOnly": True},
                    mount(source.claim_name, source.path, SOURCE_DIR, True),
                    mount(destination.claim_name, destination.path, TARGET_DIR, False),
                ],
                "terminationMessagePath": mounts.TERMINATION_MESSAGE_PATH,
                "terminationMessagePolicy": "File",
                "securityContext": RESTRICTED_CONTAINER,
            }
        ],
        "volumes": volumes,
    }
    affinity = node_affinity(domain)
    if affinity:
        pod_spec["affinity"] = affinity
    # The domain's pools are GPU pools, tainted against work that needs no GPU; the copy must
    # still run there, where the domain's data may be.
    pod_spec["tolerations"] = [
        *(t.to_json() for t in placement.tolerations),
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    ]
    if placement.require_confidential_compute:
        # The weights of a confidential domain are read only where its jobs may run.
        pod_spec["runtimeClassName"] = placement.confidential_runtime_class_name
        pod_spec["nodeSelector"] = dict(settings.confidential_node_labels)
    metadata = _metadata(name, namespace, artifact, domain)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": KEEP_FINISHED_SECONDS,
            "template": {"metadata": {"labels": dict(metadata["labels"])}, "spec": pod_spec},
        },
    }


def release_config_map(
    artifact: ModelArtifact, index: int, domain: DataDomain, owner: dict[str, Any]
) -> dict[str, Any]:
    """The copy's instructions, owned by the release Job (deleted with it). Nothing secret: the
    file digests and the signature bundle are in the artifact already."""
    metadata = _metadata(job_name(artifact, index), domain_namespace(domain), artifact, domain)
    metadata["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
    ]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {CONFIG_FILE: json.dumps(release_config(artifact), sort_keys=True)},
    }
