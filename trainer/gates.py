"""Evaluation gates: each measured value against its configured bound. A chain of pure checks
(cert-manager's policy shape): every gate reports its own outcome, so the operator can say
which failed and why. A configured gate whose value was not measured fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealtune_trainer.contract import GateSpec


@dataclass(frozen=True)
class Measurements:
    eval_loss: float | None
    max_canary_exposure: float | None
    mia_auc: float | None
    epsilon: float | None
    adapter_changed: bool


@dataclass(frozen=True)
class GateOutcome:
    name: str
    passed: bool
    value: float | bool | None
    threshold: float | bool | None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value,
                "threshold": self.threshold}


def _bound(name: str, value: float | None, threshold: float | None) -> GateOutcome | None:
    if threshold is None:
        return None
    return GateOutcome(name, value is not None and value <= threshold, value, threshold)


def evaluate(spec: GateSpec, measured: Measurements) -> list[GateOutcome]:
    # The weights must move: Opacus + peft once produced adapters that never changed while
    # loss and epsilon looked normal (meta-pytorch/opacus#820).
    outcomes = [GateOutcome("WeightsChanged", measured.adapter_changed,
                            measured.adapter_changed, True)]
    for outcome in (
        _bound("EvalLoss", measured.eval_loss, spec.max_eval_loss),
        _bound("CanaryExposure", measured.max_canary_exposure, spec.max_canary_exposure),
        _bound("MembershipInferenceAuc", measured.mia_auc, spec.max_mia_auc),
        _bound("Epsilon", measured.epsilon, spec.max_epsilon),
    ):
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
