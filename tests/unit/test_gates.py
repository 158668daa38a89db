"""The operator judges every gate itself, from the job's thresholds and the trainer's
measurements; the trainer's verdicts count for nothing."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sealtune import gates
from sealtune.api.v1alpha1 import FineTuneJob
from tests.support.objects import finetune_job

WEIGHTS = {"name": "WeightsChanged", "passed": True, "value": True}


def job(**evaluation: float) -> FineTuneJob:
    body = finetune_job("j", "ns", "d", evaluation=evaluation)
    return FineTuneJob.model_validate(body)


def test_a_result_that_claims_its_gates_passed_is_judged_on_its_measurements() -> None:
    lying = {
        "gatesPassed": True,
        "evalLoss": 3.0,
        "canaryExposure": 1.0,
        "gates": [WEIGHTS, {"name": "EvalLoss", "passed": True, "value": 1.0, "threshold": 2.0}],
    }
    outcomes = gates.judge(job(maxEvalLoss=2.0, maxCanaryExposure=4.0), lying)
    assert outcomes == [
        {"name": "WeightsChanged", "passed": True},
        {"name": "EvalLoss", "passed": False, "threshold": 2.0, "value": 3.0},
        {"name": "CanaryExposure", "passed": True, "threshold": 4.0, "value": 1.0},
    ]
    assert gates.failed(outcomes) == ["EvalLoss"]


def test_a_missing_or_unreal_measurement_fails_its_gate() -> None:
    for measured in (None, "1.0", True, math.nan, math.inf):
        result: dict[str, Any] = {"gates": [WEIGHTS], "evalLoss": measured}
        assert gates.failed(gates.judge(job(maxEvalLoss=2.0), result)) == ["EvalLoss"]


def test_weights_must_have_changed_by_the_trainers_measurement() -> None:
    for reported in ([], [{"name": "WeightsChanged", "passed": True, "value": False}], ["junk"]):
        assert gates.failed(gates.judge(job(), {"gates": reported})) == ["WeightsChanged"]


@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0.01, max_value=100))
def test_a_gate_passes_exactly_when_the_value_is_within_its_threshold(value: float, threshold: float) -> None:
    outcome = gates.judge(job(maxEvalLoss=threshold), {"gates": [WEIGHTS], "evalLoss": value})[1]
    assert outcome["passed"] is (value <= threshold)
