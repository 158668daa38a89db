"""The operator's metrics: state computed from the indexes at scrape time, and the counters the
reconcile and the webhook feed."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sealtune import metrics
from sealtune.adapters.kube import Conflict
from sealtune.reconcile import Packed

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def ftj(
    phase: str | None,
    created: str = "2025-01-01T11:00:00Z",
    conditions: tuple[dict[str, Any], ...] = (),
    deletions: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions), "deletions": list(deletions)}
    if phase:
        status["phase"] = phase
    return {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"creationTimestamp": created},
        "spec": {"domainRef": {"name": "d"}},
        "status": status,
    }


def scrape(jobs: dict[Any, Any], artifacts: dict[Any, Any]) -> dict[str, list[tuple[dict[str, str], float]]]:
    collector = metrics.StateCollector(clock=lambda: NOW)
    registry = CollectorRegistry()
    registry.register(collector)
    collector.bind(
        lambda: {k: [Packed.of(v)] for k, v in jobs.items()}, lambda: {k: [v] for k, v in artifacts.items()}
    )
    text = generate_latest(registry).decode()
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_state_from_the_indexes() -> None:
    jobs = {
        ("a", "new"): ftj(None),
        ("a", "waiting"): ftj("Pending", created="2025-01-01T11:30:00Z"),
        ("a", "train"): ftj("Running"),
        ("b", "broke"): ftj(
            "Failed", conditions=({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"},)
        ),
        ("b", "gated"): ftj(
            "Succeeded",
            conditions=({"type": "Published", "status": "False", "reason": "GatesFailed"},),
            deletions=(
                {"target": "checkpoints", "dueAt": "2025-01-01T11:50:00Z"},
                {"target": "logs", "dueAt": "2025-01-01T11:00:00Z", "deletedAt": "2025-01-01T11:00:05Z"},
                {"target": "trainingCopies", "dueAt": "2025-01-01T11:59:00Z"},
                {"target": "dataKey", "dueAt": "2025-01-01T13:00:00Z"},
            ),
        ),
    }
    artifacts = {("b", "m1"): "Candidate", ("b", "m2"): "Approved", ("b", "m3"): "Approved"}
    state = scrape(jobs, artifacts)
    phases = {labels["phase"]: value for labels, value in state["sealtune_finetunejobs"]}
    assert phases == {
        "Pending": 2, "Blocked": 0, "Suspended": 0, "Running": 1, "Succeeded": 1, "Failed": 1,
    }  # fmt: skip
    assert sorted(state["sealtune_finetunejob_pending_seconds"], key=lambda s: s[1]) == [
        ({"namespace": "a", "name": "waiting"}, 1800.0),
        ({"namespace": "a", "name": "new"}, 3600.0),
    ]
    assert state["sealtune_finetunejob_failed"] == [
        ({"namespace": "b", "name": "broke", "reason": "BackoffLimitExceeded"}, 1.0)
    ]
    assert state["sealtune_finetunejob_gates_failed"] == [({"namespace": "b", "name": "gated"}, 1.0)]
    assert state["sealtune_deletions_overdue"] == [({}, 2.0)]
    assert state["sealtune_deletion_overdue_oldest_seconds"] == [({}, 600.0)]
    stages = {labels["stage"]: value for labels, value in state["sealtune_modelartifacts"]}
    assert stages == {"Candidate": 1, "Approved": 2, "Revoked": 0}


def test_no_state_before_the_indexes_are_bound() -> None:
    registry = CollectorRegistry()
    registry.register(metrics.StateCollector())
    assert generate_latest(registry) == b""


def sample_value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("raised", "result"), [(None, "success"), (Conflict(409, {}), "conflict"), (OSError("down"), "error")]
)
def test_reconcile_timer_records_the_result(raised: Exception | None, result: str) -> None:
    name = "sealtune_reconcile_duration_seconds_count"
    before = sample_value(name, kind="Test", result=result)
    with pytest.raises(type(raised)) if raised else nullcontext(), metrics.reconcile_timer("Test"):
        if raised:
            raise raised
    assert sample_value(name, kind="Test", result=result) == before + 1


@pytest.mark.parametrize(
    ("raised", "result"), [(None, "allowed"), (kopf.AdmissionError("no"), "refused"), (KeyError(), "error")]
)
def test_webhook_timer_records_the_result(raised: Exception | None, result: str) -> None:
    name = "sealtune_webhook_duration_seconds_count"
    before = sample_value(name, result=result)
    with pytest.raises(type(raised)) if raised else nullcontext(), metrics.webhook_timer():
        if raised:
            raise raised
    assert sample_value(name, result=result) == before + 1


def test_status_changes_count_refusals_and_time_to_running_once() -> None:
    body = {"metadata": {"creationTimestamp": "2025-01-01T11:00:00Z"}}
    refused = {"conditions": [{"type": "PolicyAdmitted", "status": "False", "reason": "MethodNotAllowed"}]}
    running = {
        "conditions": [
            {"type": "PolicyAdmitted", "status": "True", "reason": "Admitted"},
            {"type": "Running", "status": "True", "reason": "WorkersRunning",
             "lastTransitionTime": "2025-01-01T11:02:00Z"},
        ]
    }  # fmt: skip
    refusals = "sealtune_policy_refusals_total"
    to_running = "sealtune_finetunejob_time_to_running_seconds"
    before = sample_value(refusals, reason="MethodNotAllowed", source="reconcile")
    started = sample_value(f"{to_running}_count")
    started_sum = sample_value(f"{to_running}_sum")
    metrics.observe_status(body, {}, refused)
    metrics.observe_status(body, refused, refused)  # a write that changed nothing of these
    metrics.observe_status(body, refused, running)
    metrics.observe_status(body, running, running)
    assert sample_value(refusals, reason="MethodNotAllowed", source="reconcile") == before + 1
    assert sample_value(f"{to_running}_count") == started + 1
    assert sample_value(f"{to_running}_sum") == started_sum + 120
