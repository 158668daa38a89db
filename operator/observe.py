"""What the operator observes of a FineTuneJob's workload, reduced to the few fields the
reconcile needs. These summaries are what the in-memory indexes hold (not whole objects), so
memory stays small with thousands of jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .names import ANNOTATION_DESIRED_HASH, COMPLETION_INDEX_ANNOTATION, LABEL_JOB_UID

STARTING = ("ContainerCreating", "PodInitializing")
"""Waiting reasons that are just a container on its way up, not news."""


@dataclass(frozen=True, slots=True)
class JobObservation:
    uid: str
    suspended: bool
    active: int
    ready: int
    succeeded: int
    failed: int
    start_time: str | None
    completion_time: str | None
    desired_hash: str | None
    owner_uid: str | None = None
    # Terminal condition of the batch Job, if any: ("Complete" | "Failed", reason, message).
    finished: tuple[str, str, str] | None = None
    namespace: str = ""
    job_uid: str = ""
    """The uid of the FineTuneJob its labels name. Only a Job in that job's workload namespace,
    where tenants create nothing, with that uid counts as the job's."""
    managers: frozenset[str] = frozenset()
    """The field managers that wrote the Job itself (not its status): whoever created it is one."""


@dataclass(frozen=True, slots=True)
class PodObservation:
    name: str
    index: int | None
    """The Job controller's completion index; None when the annotation is absent or garbled."""
    node_name: str | None
    phase: str
    runtime_class: str | None
    unschedulable: str | None
    """The scheduler's message while the pod cannot be placed."""
    termination_message: str | None = None
    exit_code: int | None = None
    owner_uid: str | None = None
    """The uid of the Job that controls the pod (its controller ownerReference of kind Job)."""
    image: str | None = None
    image_id: str | None = None
    """The trainer's image reference and the digest the node ran (for provenance)."""
    waiting: str | None = None
    """Why a container cannot start, e.g. "vault-init: ImagePullBackOff: ...", while it waits."""
    ip: str | None = None
    namespace: str = ""
    job_uid: str = ""
    """As for JobObservation: anyone may label a pod of their own namespace as a job's worker."""


@dataclass(frozen=True, slots=True)
class Observation:
    job: JobObservation | None = None
    pods: tuple[PodObservation, ...] = field(default_factory=tuple)
    queue: QueueObservation | None = None
    """Kueue's Workload for the batch Job, when the job names a queue and Kueue made one."""


def observe_job(body: dict[str, Any]) -> JobObservation:
    status = body.get("status") or {}
    finished = None
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            finished = (cond["type"], cond.get("reason") or "", cond.get("message") or "")
    return JobObservation(
        uid=body["metadata"]["uid"],
        namespace=body["metadata"].get("namespace", ""),
        job_uid=(body["metadata"].get("labels") or {}).get(LABEL_JOB_UID, ""),
        suspended=bool((body.get("spec") or {}).get("suspend")),
        active=status.get("active", 0),
        ready=status.get("ready", 0) or 0,
        succeeded=status.get("succeeded", 0),
        failed=status.get("failed", 0),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        desired_hash=(body["metadata"].get("annotations") or {}).get(ANNOTATION_DESIRED_HASH),
        owner_uid=next(
            (o["uid"] for o in body["metadata"].get("ownerReferences") or [] if o.get("controller")), None
        ),
        finished=finished,
        managers=frozenset(
            str(e.get("manager", ""))
            for e in body["metadata"].get("managedFields") or []
            if not e.get("subresource")
        ),
    )


@dataclass(frozen=True, slots=True)
class QueueObservation:
    """Kueue's view of a queued batch Job: its Workload's admission and the reason it waits."""

    name: str
    """The Workload's name."""
    namespace: str
    job_uid: str
    """The FineTuneJob uid its labels name (Kueue copies them from the Job: labelKeysToCopy)."""
    owner_uid: str | None
    """The batch Job it belongs to."""
    admitted: bool
    cluster_queue: str | None
    flavors: tuple[str, ...]
    message: str
    """Kueue's own words: why it waits, or how it was admitted."""
    evicted: tuple[str, str] | None = None
    """(reason, message) while Kueue has evicted it (Preempted, ...) and not admitted it again."""


def _true(conditions: dict[str, dict[str, Any]], kind: str) -> bool:
    return (conditions.get(kind) or {}).get("status") == "True"


def observe_workload(body: dict[str, Any]) -> QueueObservation:
    metadata, status = body["metadata"], body.get("status") or {}
    conditions = {c.get("type", ""): c for c in status.get("conditions") or []}
    admission = status.get("admission") or {}
    flavors = sorted(
        {f for a in admission.get("podSetAssignments") or [] for f in (a.get("flavors") or {}).values()}
    )
    admitted = _true(conditions, "Admitted")
    evicted = conditions.get("Evicted") if _true(conditions, "Evicted") and not admitted else None
    governing = conditions.get("Admitted" if admitted else "QuotaReserved") or {}
    return QueueObservation(
        name=metadata["name"],
        namespace=metadata.get("namespace", ""),
        job_uid=(metadata.get("labels") or {}).get(LABEL_JOB_UID, ""),
        owner_uid=next(
            (o.get("uid") for o in metadata.get("ownerReferences") or [] if o.get("kind") == "Job"), None
        ),
        admitted=admitted,
        cluster_queue=admission.get("clusterQueue"),
        flavors=tuple(flavors),
        message=str(governing.get("message") or ""),
        evicted=(str(evicted.get("reason") or ""), str(evicted.get("message") or "")) if evicted else None,
    )


def observe_pod(body: dict[str, Any]) -> PodObservation:
    metadata, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    unschedulable = None
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            unschedulable = cond.get("message") or "no node fits"
    message, exit_code, image, image_id = None, None, None, None
    for container in status.get("containerStatuses") or []:
        if container.get("name") != "trainer":
            continue
        image, image_id = container.get("image"), container.get("imageID") or None
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            message, exit_code = terminated.get("message"), terminated.get("exitCode")
    waiting = next(
        (
            f"{c.get('name')}: {w.get('reason')}: {w.get('message') or ''}".strip(": ")
            for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
            if (w := (c.get("state") or {}).get("waiting")) and w.get("reason") not in STARTING
        ),
        None,
    )
    index = (metadata.get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "")
    return PodObservation(
        name=metadata["name"],
        namespace=metadata.get("namespace", ""),
        job_uid=(metadata.get("labels") or {}).get(LABEL_JOB_UID, ""),
        index=int(index) if index.isdecimal() and index.isascii() else None,
        node_name=spec.get("nodeName"),
        phase=status.get("phase", "Pending"),
        runtime_class=spec.get("runtimeClassName"),
        unschedulable=unschedulable,
        termination_message=message,
        exit_code=exit_code,
        owner_uid=next(
            (
                o.get("uid")
                for o in metadata.get("ownerReferences") or []
                if o.get("controller") and o.get("kind") == "Job" and o.get("apiVersion") == "batch/v1"
            ),
            None,
        ),
        image=image,
        image_id=image_id,
        waiting=waiting,
        ip=status.get("podIP"),
    )


def result_pod(seen: Observation) -> PodObservation | None:
    """The pod whose termination message is the job's result: completion index 0, controlled
    by the job's batch Job (the one the operator made, by uid). A pod merely labelled as the
    job's worker, or without an index, never counts."""
    if seen.job is None:
        return None
    return next(
        (p for p in seen.pods if p.index == 0 and p.owner_uid == seen.job.uid and p.termination_message),
        None,
    )
