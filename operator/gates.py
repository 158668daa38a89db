"""The evaluation gates, judged by the operator: thresholds from the job's spec (which the
policy holds at least as strict as its domain's), measurements from the trainer's result. The
trainer's own verdicts (``passed``, ``gatesPassed``) are not believed: a compromised trainer
image could claim anything."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .api.v1alpha1 import FineTuneJob

WEIGHTS_CHANGED = "WeightsChanged"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def judge(job: FineTuneJob, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every gate the job configures, as status and artifacts hold them. A configured gate
    without a measurement fails. WeightsChanged (the adapter moved at all) has no threshold: it
    passes only on the trainer's measured true."""
    spec, dp = job.spec.evaluation, job.spec.privacy.differential_privacy
    reported = {g.get("name"): g for g in result.get("gates") or [] if isinstance(g, Mapping)}
    outcomes: list[dict[str, Any]] = [
        {"name": WEIGHTS_CHANGED, "passed": reported.get(WEIGHTS_CHANGED, {}).get("value") is True}
    ]
    for name, measured, threshold in (
        ("EvalLoss", result.get("evalLoss"), spec.max_eval_loss),
        ("CanaryExposure", result.get("canaryExposure"), spec.max_canary_exposure),
        ("MembershipInferenceAuc", result.get("miaAuc"), spec.max_membership_inference_auc),
        ("Epsilon", result.get("epsilon"), dp.target_epsilon if dp else None),
    ):
        if threshold is None:
            continue
        value = _number(measured)
        outcome = {"name": name, "passed": value is not None and value <= threshold, "threshold": threshold}
        if value is not None:
            outcome["value"] = value
        outcomes.append(outcome)
    return outcomes


def failed(outcomes: list[dict[str, Any]]) -> list[str]:
    return [o["name"] for o in outcomes if not o["passed"]]
