"""Pure status computation: from the job, the policy verdict and what was observed, the status
the FineTuneJob should have. Conditions keep their lastTransitionTime unless their status flips."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .api.v1alpha1 import FineTuneJob
from .api.v1alpha1.conditions import (
    FailedReason,
    PolicyAdmittedReason,
    QueueAdmittedReason,
    RunningReason,
    ScheduledReason,
    SucceededReason,
    SuspendedReason,
)
from .api.v1alpha1.conditions import JobConditionType as T
from .names import Workload
from .observe import Observation, QueueObservation, result_pod
from .policy import Violation

MAX_MESSAGE = 1024
RESULT_LIMIT = 4096


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str


def _ts(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    old: Sequence[dict[str, Any]], new: Sequence[Cond], generation: int, now: datetime
) -> list[dict[str, Any]]:
    """New conditions in the order given, keeping lastTransitionTime where status is unchanged,
    and the old conditions this computation does not speak about."""
    previous = {c["type"]: c for c in old}
    merged = []
    for cond in new:
        status = "True" if cond.status else "False"
        before = previous.pop(cond.type, None)
        moved = before is None or before.get("status") != status
        merged.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message[:MAX_MESSAGE],
                "observedGeneration": generation,
                "lastTransitionTime": _ts(now) if moved else before["lastTransitionTime"],  # type: ignore[index]
            }
        )
    merged.extend(previous.values())
    return merged


def transitions(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions of ``new`` whose status or reason differs from ``old``: one Event each."""
    before = {c["type"]: (c["status"], c["reason"]) for c in old}
    return [c for c in new if before.get(c["type"]) != (c["status"], c["reason"])]


def parse_result(message: str | None) -> dict[str, Any] | None:
    """The trainer's JSON result from its termination message, if it is one."""
    if not message or len(message) > RESULT_LIMIT:
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def refused_conditions(violation: Violation) -> list[Cond]:
    return [Cond(T.POLICY_ADMITTED, False, violation.reason, str(violation))]


FAILED_REASONS = {
    "BackoffLimitExceeded": FailedReason.BACKOFF_LIMIT_EXCEEDED,
    "DeadlineExceeded": FailedReason.DEADLINE_EXCEEDED,
    "PodFailurePolicy": FailedReason.POD_FAILURE_POLICY,
}


def admitted() -> Cond:
    return Cond(
        T.POLICY_ADMITTED, True, PolicyAdmittedReason.ADMITTED, "the job complies with its domain's policy"
    )


def queue_conditions(queue: str, seen: QueueObservation | None) -> tuple[Cond, Cond]:
    """QueueAdmitted, and the Suspended condition for while Kueue holds the job, from its Workload."""
    if seen is None:
        waiting = f"Kueue has made no Workload for the job's batch Job yet (LocalQueue {queue})"
        return (
            Cond(T.QUEUE_ADMITTED, False, QueueAdmittedReason.NO_WORKLOAD, waiting),
            Cond(T.SUSPENDED, True, SuspendedReason.QUEUED_BY_KUEUE, waiting),
        )
    if seen.admitted:
        flavors = f", flavor {', '.join(seen.flavors)}" if seen.flavors else ""
        message = f"Workload {seen.name} admitted by ClusterQueue {seen.cluster_queue}{flavors}"
        return (
            Cond(T.QUEUE_ADMITTED, True, QueueAdmittedReason.ADMITTED, message),
            Cond(T.SUSPENDED, True, SuspendedReason.QUEUED_BY_KUEUE, f"{message}; starting"),
        )
    if seen.evicted is not None:
        reason, words = seen.evicted
        message = f"Workload {seen.name} evicted by Kueue ({reason}): {words}"
        return (
            Cond(T.QUEUE_ADMITTED, False, QueueAdmittedReason.EVICTED, message),
            Cond(
                T.SUSPENDED,
                True,
                SuspendedReason.EVICTED_BY_KUEUE,
                f"{message}; it resumes from its last sealed checkpoint when Kueue admits it again",
            ),
        )
    words = seen.message or "Kueue has not judged it yet"
    message = f"Workload {seen.name} waits in LocalQueue {queue}: {words}"
    return (
        Cond(T.QUEUE_ADMITTED, False, QueueAdmittedReason.WAITING, message),
        Cond(T.SUSPENDED, True, SuspendedReason.QUEUED_BY_KUEUE, message),
    )


def workload_conditions(job: FineTuneJob, seen: Observation) -> tuple[list[Cond], str]:
    """Conditions and phase of an admitted job from its batch Job and pods."""
    workers = job.spec.resources.workers
    conds = [admitted()]
    batch = seen.job
    suspended = job.spec.scheduling.suspend or (batch is not None and batch.suspended)
    queued = job.spec.scheduling.queue_name is not None
    if not suspended:
        conds.append(Cond(T.SUSPENDED, False, SuspendedReason.RESUMED, "the job is not suspended"))
    elif job.spec.scheduling.suspend or not queued:
        conds.append(
            Cond(T.SUSPENDED, True, SuspendedReason.SUSPENDED_BY_USER, "spec.scheduling.suspend is true")
        )
    if queued:
        in_queue, held = queue_conditions(job.spec.scheduling.queue_name or "", seen.queue)
        conds.append(in_queue)
        if suspended and not job.spec.scheduling.suspend:
            conds.append(held)
    if batch is not None and batch.finished is not None:
        kind, reason, message = batch.finished
        done = "the job finished"
        if kind == "Complete":
            conds += [
                Cond(
                    T.SCHEDULED,
                    True,
                    ScheduledReason.PODS_SCHEDULED,
                    "every worker was placed on an allowed node",
                ),
                Cond(T.RUNNING, False, RunningReason.FINISHED, done),
                Cond(T.SUCCEEDED, True, SucceededReason.TRAINING_COMPLETED, "every worker completed"),
                Cond(T.FAILED, False, SucceededReason.TRAINING_COMPLETED, "the job succeeded"),
            ]
            return conds, "Succeeded"
        failed = FAILED_REASONS.get(reason, FailedReason.BACKOFF_LIMIT_EXCEEDED)
        conds += [
            Cond(T.RUNNING, False, RunningReason.FINISHED, done),
            Cond(T.SUCCEEDED, False, failed, "the job failed"),
            Cond(T.FAILED, True, failed, message or reason),
        ]
        return conds, "Failed"
    if suspended:
        return conds, "Suspended"
    pods = [p for p in seen.pods if p.phase not in ("Succeeded", "Failed")]
    unschedulable = [p for p in pods if p.unschedulable]
    # A worker that already finished still counts as placed and as at work, until the Job
    # says Complete: otherwise a job would step back from Running to Pending in between.
    finished = {p.index for p in seen.pods if p.phase == "Succeeded" and p.index is not None}
    placed = {p.index for p in pods if p.node_name and p.index is not None} | finished
    running = {p.index for p in pods if p.phase == "Running" and p.index is not None} | finished
    if unschedulable:
        conds.append(
            Cond(
                T.SCHEDULED,
                False,
                ScheduledReason.UNSCHEDULABLE,
                f"{len(unschedulable)} of {workers} workers cannot be placed on a node the domain allows; "
                f"the scheduler says: {unschedulable[0].unschedulable}",
            )
        )
    elif len(placed) >= workers:
        conds.append(
            Cond(
                T.SCHEDULED, True, ScheduledReason.PODS_SCHEDULED, "every worker is placed on an allowed node"
            )
        )
    else:
        conds.append(
            Cond(T.SCHEDULED, False, ScheduledReason.PENDING, f"{len(placed)} of {workers} workers placed")
        )
    if len(running) >= workers:
        conds.append(
            Cond(T.RUNNING, True, RunningReason.WORKERS_RUNNING, f"{workers} of {workers} workers running")
        )
        return conds, "Running"
    stuck = next((f"; {p.name} waits: {p.waiting}" for p in pods if p.waiting), "")
    conds.append(
        Cond(
            T.RUNNING,
            False,
            RunningReason.WORKERS_STARTING,
            f"{len(running)} of {workers} workers running{stuck}",
        )
    )
    return conds, "Pending"


def compute_status(
    job: FineTuneJob,
    old_status: dict[str, Any],
    violation: Violation | None,
    seen: Observation,
    now: datetime,
    *,
    secrets: Cond | None = None,
) -> dict[str, Any]:
    """The whole status the job should have now. ``secrets`` is the SecretsReady condition when
    the reconcile looked at Vault. Fields this function does not own (progress, receipts,
    vault, artifactRef...) are carried over unchanged."""
    generation = int(job.metadata.get("generation", 1))
    status = dict(old_status)
    if violation is not None:
        conds, phase = refused_conditions(violation), "Blocked"
    elif secrets is not None and not secrets.status and seen.job is None:
        conds, phase = [admitted(), secrets], "Pending"
    else:
        conds, phase = workload_conditions(job, seen)
        if secrets is not None:
            conds.insert(1, secrets)
    status["conditions"] = merge_conditions(old_status.get("conditions") or [], conds, generation, now)
    status["phase"] = phase
    status["observedGeneration"] = generation
    batch = seen.job
    if batch is not None:
        if batch.start_time:
            status["startTime"] = batch.start_time
        if batch.completion_time:
            status["completionTime"] = batch.completion_time
        status["workers"] = {"active": batch.active, "succeeded": batch.succeeded, "failed": batch.failed}
    nodes = sorted({p.node_name for p in seen.pods if p.node_name})
    if nodes:
        placement: dict[str, Any] = {"nodes": nodes}
        runtime = next((p.runtime_class for p in seen.pods if p.runtime_class), None)
        if runtime:
            placement["runtimeClassName"] = runtime
        status["placement"] = placement
    timestamps = dict(old_status.get("timestamps") or {})
    if violation is None and "admittedAt" not in timestamps:
        timestamps["admittedAt"] = _ts(now)
    if phase in ("Succeeded", "Failed") and "finishedAt" not in timestamps:
        timestamps["finishedAt"] = (
            batch.completion_time if batch and batch.completion_time else None
        ) or _ts(now)
    if timestamps:
        status["timestamps"] = timestamps
    if phase == "Succeeded":
        lead = result_pod(seen)
        result = parse_result(lead.termination_message if lead else None)
        if result is not None:
            status["result"] = result_summary(result)
    return status


def result_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The fields of the trainer's result that status.result holds."""
    keys = {
        "steps": "steps",
        "finalLoss": "trainLoss",
        "evalLoss": "evalLoss",
        "canaryExposure": "canaryExposure",
        "miaAuc": "membershipInferenceAUC",
        "epsilon": "epsilon",
        "dataDigest": "dataDigest",
        "manifestDigest": "manifestDigest",
    }
    summary = {ours: result[theirs] for theirs, ours in keys.items() if result.get(theirs) is not None}
    gates = result.get("gates")
    if isinstance(gates, list):
        summary["gates"] = [
            gate_outcome(g) for g in gates if isinstance(g, dict) and "name" in g and "passed" in g
        ][:16]
    return summary


def gate_outcome(gate: dict[str, Any]) -> dict[str, Any]:
    """A gate as status holds it: name, passed, and value and threshold when they are numbers
    (the trainer's weightsChanged gate reports booleans, which say nothing passed does not)."""
    outcome = {"name": gate["name"], "passed": bool(gate["passed"])}
    for key in ("value", "threshold"):
        value = gate.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            outcome[key] = value
    return outcome


def workload_status(workload: Workload, batch_uid: str | None, old: Mapping[str, Any]) -> dict[str, Any]:
    """Where the job's workload runs, and the uid of the batch Job the operator created for it
    (kept once known: only a Job of that uid is the job's)."""
    uid = batch_uid or (old.get("workload") or {}).get("batchJobUID")
    return {
        "namespace": workload.namespace,
        "batchJob": workload.batch_job,
        **({"batchJobUID": uid} if uid else {}),
    }
