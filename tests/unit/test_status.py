"""Status computation: conditions from observations, transition times that move only on flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sealtune.api.v1alpha1 import FineTuneJob
from sealtune.names import COMPLETION_INDEX_ANNOTATION, Workload
from sealtune.observe import (
    JobObservation,
    Observation,
    PodObservation,
    observe_job,
    observe_pod,
    observe_workload,
)
from sealtune.status import (
    Cond,
    compute_status,
    merge_conditions,
    result_summary,
    transitions,
    workload_status,
)
from tests.support.objects import finetune_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(**spec: object) -> FineTuneJob:
    body = finetune_job("j", "ns", "d", **spec)
    body["metadata"].update(uid="u", generation=3)
    return FineTuneJob.model_validate(body)


def batch(**kw: object) -> JobObservation:
    base = {
        "uid": "b",
        "suspended": False,
        "active": 1,
        "ready": 0,
        "succeeded": 0,
        "failed": 0,
        "start_time": None,
        "completion_time": None,
        "desired_hash": None,
    }
    return JobObservation(**{**base, **kw})  # type: ignore[arg-type]


def pod(**kw: object) -> PodObservation:
    base = {
        "name": "j-0",
        "index": 0,
        "node_name": None,
        "phase": "Pending",
        "runtime_class": None,
        "unschedulable": None,
        "owner_uid": "b",
    }
    return PodObservation(**{**base, **kw})  # type: ignore[arg-type]


def conds(status: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_transition_time_moves_only_when_status_flips() -> None:
    first = merge_conditions([], [Cond("Running", False, "WorkersStarting", "0 of 1")], 1, T0)
    later = T0 + timedelta(minutes=5)
    same = merge_conditions(first, [Cond("Running", False, "WorkersStarting", "still 0 of 1")], 2, later)
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert same[0]["observedGeneration"] == 2
    flipped = merge_conditions(same, [Cond("Running", True, "WorkersRunning", "1 of 1")], 2, later)
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert transitions(same, flipped) == flipped


def test_unschedulable_carries_the_scheduler_message() -> None:
    seen = Observation(batch(), (pod(unschedulable="0/4 nodes are available: Insufficient nvidia.com/gpu."),))
    status = compute_status(job(), {}, None, seen, T0)
    assert conds(status)["Scheduled"] == ("False", "Unschedulable")
    assert (
        "Insufficient nvidia.com/gpu"
        in next(c for c in status["conditions"] if c["type"] == "Scheduled")["message"]
    )
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 3


def test_running_then_succeeded_with_the_trainer_result() -> None:
    running = compute_status(
        job(), {}, None, Observation(batch(), (pod(node_name="n1", phase="Running"),)), T0
    )
    assert running["phase"] == "Running" and conds(running)["Running"] == ("True", "WorkersRunning")
    result = '{"steps": 10, "finalLoss": 1.5, "dataDigest": "sha256:' + "a" * 64 + '"}'
    done = compute_status(
        job(),
        running,
        None,
        Observation(
            batch(finished=("Complete", "", ""), completion_time="2026-01-01T00:10:00Z"),
            (pod(node_name="n1", phase="Succeeded", termination_message=result),),
        ),
        T0 + timedelta(minutes=10),
    )
    assert done["phase"] == "Succeeded"
    assert conds(done)["Succeeded"] == ("True", "TrainingCompleted")
    assert done["result"] == {"steps": 10, "trainLoss": 1.5, "dataDigest": "sha256:" + "a" * 64}
    assert done["timestamps"]["finishedAt"] == "2026-01-01T00:10:00Z"


def test_failed_job_maps_the_batch_reason() -> None:
    status = compute_status(
        job(), {}, None, Observation(batch(finished=("Failed", "DeadlineExceeded", "too slow"))), T0
    )
    assert conds(status)["Failed"] == ("True", "DeadlineExceeded")
    assert status["phase"] == "Failed"


def test_a_worker_that_cannot_start_says_why() -> None:
    body = {
        "metadata": {"name": "j-0", "annotations": {}},
        "spec": {"nodeName": "n1"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "vault-init",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'pull "x:1" failed'}},
                }
            ],
            "containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": "PodInitializing"}}}],
        },
    }
    seen = Observation(batch(), (observe_pod(body),))
    running = next(
        c for c in compute_status(job(), {}, None, seen, T0)["conditions"] if c["type"] == "Running"
    )
    assert (
        running["message"]
        == '0 of 1 workers running; j-0 waits: vault-init: ImagePullBackOff: pull "x:1" failed'
    )
    starting = {
        **body,
        "status": {"phase": "Pending", "containerStatuses": body["status"]["containerStatuses"]},
    }
    assert observe_pod(starting).waiting is None


def test_a_finished_worker_keeps_the_job_running_until_the_job_completes() -> None:
    two = job(resources={"workers": 2})
    seen = Observation(
        batch(active=1, succeeded=1),
        (pod(node_name="n1", phase="Succeeded"), pod(name="j-1", index=1, node_name="n2", phase="Running")),
    )
    status = compute_status(two, {}, None, seen, T0)
    assert status["phase"] == "Running"
    assert conds(status)["Scheduled"] == ("True", "PodsScheduled")
    last = Observation(batch(active=0, succeeded=2), (pod(node_name="n1", phase="Succeeded"),))
    assert compute_status(job(), status, None, last, T0)["phase"] == "Running"


def test_gate_outcomes_keep_only_numeric_values() -> None:
    result = {
        "gates": [
            {"name": "maxEvalLoss", "passed": True, "value": 1.5, "threshold": 2.0},
            {"name": "weightsChanged", "passed": True, "value": True, "threshold": True},
        ]
    }
    gates = result_summary(result)["gates"]
    assert gates == [
        {"name": "maxEvalLoss", "passed": True, "value": 1.5, "threshold": 2.0},
        {"name": "weightsChanged", "passed": True},
    ]
    FineTuneJob.model_validate({**job().to_json(), "status": {"result": {"gates": gates}}})


def test_a_result_counts_only_from_index_0_of_the_jobs_own_batch_job() -> None:
    """A pod labelled as the job's worker but controlled by another Job, or one without a
    completion index, leaves its forged result unread."""
    forged = '{"steps": 1, "finalLoss": 0.01, "dataDigest": "sha256:' + "f" * 64 + '"}'
    honest = '{"steps": 10, "finalLoss": 1.5, "dataDigest": "sha256:' + "a" * 64 + '"}'
    finished = batch(finished=("Complete", "", ""), completion_time="2026-01-01T00:10:00Z")
    for impostor in (
        pod(name="x", phase="Succeeded", termination_message=forged, owner_uid="other"),
        pod(name="y", phase="Succeeded", termination_message=forged, index=None),
    ):
        alone = compute_status(job(), {}, None, Observation(finished, (impostor,)), T0)
        assert "result" not in alone
        real = pod(phase="Succeeded", termination_message=honest)
        both = compute_status(job(), {}, None, Observation(finished, (impostor, real)), T0)
        assert both["result"]["trainLoss"] == 1.5


def test_the_completion_index_must_be_the_job_controllers() -> None:
    def observed(annotations: dict[str, str], owners: list[dict[str, object]]) -> PodObservation:
        return observe_pod({"metadata": {"name": "p", "annotations": annotations, "ownerReferences": owners}})

    job_owner = {"apiVersion": "batch/v1", "kind": "Job", "uid": "b", "controller": True}
    assert observed({COMPLETION_INDEX_ANNOTATION: "0"}, [job_owner]).index == 0
    assert observed({}, [job_owner]).index is None
    assert observed({COMPLETION_INDEX_ANNOTATION: "-1"}, [job_owner]).index is None
    assert observed({COMPLETION_INDEX_ANNOTATION: "0"}, [job_owner]).owner_uid == "b"
    not_controller = {**job_owner, "controller": False}
    assert observed({COMPLETION_INDEX_ANNOTATION: "0"}, [not_controller]).owner_uid is None
    replica_set = {**job_owner, "kind": "ReplicaSet", "apiVersion": "apps/v1"}
    assert observed({COMPLETION_INDEX_ANNOTATION: "0"}, [replica_set]).owner_uid is None


def test_the_workload_status_keeps_the_uid_of_the_job_the_operator_made() -> None:
    work = Workload.of("j", "0b0c0d0e-0000", "ns", "sealtune-d")
    first = workload_status(work, None, {})
    assert first == {"namespace": "sealtune-d", "batchJob": work.batch_job}
    made = workload_status(work, "b-uid", {"workload": first})
    assert made["batchJobUID"] == "b-uid"
    assert workload_status(work, None, {"workload": made})["batchJobUID"] == "b-uid"


def test_a_jobs_writers_are_its_field_managers_but_not_its_status_writers() -> None:
    body = {
        "metadata": {
            "uid": "b",
            "managedFields": [
                {"manager": "sealtune-operator", "operation": "Update"},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
            ],
        }
    }
    assert observe_job(body).managers == frozenset({"sealtune-operator"})


def workload(*conditions: dict[str, str], admission: dict[str, object] | None = None) -> dict[str, object]:
    """A Kueue Workload for the batch Job "b", as Kueue writes its status."""
    return {
        "metadata": {
            "name": "job-j-u-1a2b3",
            "namespace": "w",
            "labels": {"sealtune.dev/finetunejob-uid": "u"},
            "ownerReferences": [{"kind": "Job", "uid": "b", "controller": True}],
        },
        "status": {"conditions": list(conditions), **({"admission": admission} if admission else {})},
    }


def test_a_queued_job_shows_kueues_view_of_it() -> None:
    queued = job(scheduling={"queueName": "team-a-gpu"})
    held = batch(suspended=True, active=0)

    def seen(*conditions: dict[str, str], **kw: object) -> dict[str, tuple[str, str]]:
        queue = observe_workload(workload(*conditions, **kw)) if conditions else None  # type: ignore[arg-type]
        return conds(compute_status(queued, {}, None, Observation(held, (), queue), T0))

    assert seen()["QueueAdmitted"] == ("False", "NoWorkload")
    assert seen()["Suspended"] == ("True", "QueuedByKueue")
    waiting = {
        "type": "QuotaReserved",
        "status": "False",
        "reason": "Pending",
        "message": "insufficient quota",
    }
    status = compute_status(queued, {}, None, Observation(held, (), observe_workload(workload(waiting))), T0)
    [admitted] = [c for c in status["conditions"] if c["type"] == "QueueAdmitted"]
    assert admitted["reason"] == "Waiting"
    assert "job-j-u-1a2b3" in admitted["message"] and "insufficient quota" in admitted["message"]
    assert status["phase"] == "Suspended"

    evicted = {
        "type": "Evicted",
        "status": "True",
        "reason": "Preempted",
        "message": "for a higher priority job",
    }
    assert seen(evicted)["QueueAdmitted"] == ("False", "Evicted")
    assert seen(evicted)["Suspended"] == ("True", "EvictedByKueue")

    flavor = {
        "clusterQueue": "team-a",
        "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "gpu"}}],
    }
    yes = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "The workload is admitted"}
    queue = observe_workload(workload(yes, evicted, admission=flavor))
    assert queue.admitted and queue.evicted is None and queue.flavors == ("gpu",)
    running = compute_status(queued, {}, None, Observation(batch(), (), queue), T0)
    assert conds(running)["QueueAdmitted"] == ("True", "Admitted")
    assert conds(running)["Suspended"] == ("False", "Resumed")
    # A job suspended by its owner says so, whatever its queue.
    paused = job(scheduling={"queueName": "team-a-gpu", "suspend": True})
    assert conds(compute_status(paused, {}, None, Observation(held), T0))["Suspended"] == (
        "True",
        "SuspendedByUser",
    )
