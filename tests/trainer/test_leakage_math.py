"""Pure parts: exposure, AUC, canaries, the step schedule and the gates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtune_trainer import canaries, gates, membership, schedule
from sealtune_trainer.contract import CanarySpec, GateSpec

pytestmark = pytest.mark.trainer


def test_exposure_matches_the_paper() -> None:
    assert canaries.exposure(1, 1024) == 10.0
    assert canaries.exposure(1024, 1024) == 0.0
    assert canaries.exposure(4, 1024) == pytest.approx(8.0)
    assert canaries.rank_of(0.5, [0.1, 0.9, 0.4, 2.0]) == 3
    with pytest.raises(ValueError):
        canaries.exposure(0, 10)


def test_canaries_are_distinct_and_follow_the_format() -> None:
    spec = CanarySpec(count=3, format="code {digits:4}-{letters:2}", candidates=50)
    made = canaries.make_canaries(spec, seed=7)
    assert len({c.text for c in made}) == 3
    for canary in made:
        assert len(canary.candidates) == 49 and canary.text not in canary.candidates
        assert canary.text.startswith("code ") and canary.text[5:9].isdigit()
    assert made == canaries.make_canaries(spec, seed=7)
    assert canaries.space_size(canaries.parse_format(spec.format)) == 10**4 * 26**2


def test_canary_space_too_small_is_refused() -> None:
    from sealtune_trainer.errors import ConfigRefused

    with pytest.raises(ConfigRefused):
        canaries.make_canaries(CanarySpec(format="{digits:1}", candidates=10), seed=0)


def test_canary_records_split_at_the_first_placeholder() -> None:
    fmt = "my code is {digits:6}"
    assert canaries.as_record("my code is 123456", fmt, "prompt_completion") == {
        "prompt": "my code is ", "completion": "123456"}


def _auc_brute(members: list[float], others: list[float]) -> float:
    wins = sum(1.0 if m > o else 0.5 if m == o else 0.0 for m in members for o in others)
    return wins / (len(members) * len(others))


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30),
       st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_auc_equals_pairwise_definition(members: list[int], others: list[int]) -> None:
    assert membership.auc([float(m) for m in members], [float(o) for o in others]) == (
        pytest.approx(_auc_brute([float(m) for m in members], [float(o) for o in others])))


def test_auc_extremes() -> None:
    assert membership.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert membership.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert membership.auc([1.0], [1.0]) == 0.5


def test_split_is_seeded_and_disjoint() -> None:
    train, held = membership.split(100, 0.1, seed=3)
    assert len(held) == 10 and not set(train) & set(held)
    assert sorted(train + held) == list(range(100))
    assert membership.split(100, 0.1, seed=3) == (train, held)
    assert membership.split(100, 0.1, seed=4) != (train, held)


@given(n=st.integers(1, 40), batch=st.integers(1, 16), seed=st.integers(0, 5))
def test_every_epoch_visits_each_example_once(n: int, batch: int, seed: int) -> None:
    steps = math.ceil(3 * n / batch) + 1
    seen = [i for step in range(steps) for i in schedule.step_examples(n, seed, step, batch)]
    for epoch in range(3):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))


def test_micro_batches_partition_the_step_across_ranks() -> None:
    examples = list(range(12))
    shares = [schedule.micro_batches(examples, rank, 2, 3) for rank in range(2)]
    assert all(len(share) == 3 and all(len(mb) == 2 for mb in share) for share in shares)
    assert sorted(i for share in shares for mb in share for i in mb) == examples


def test_poisson_batches_are_reproducible_with_the_expected_size() -> None:
    sizes = [len(schedule.poisson_examples(1000, 1, step, 0.05)) for step in range(50)]
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.1)
    assert schedule.poisson_examples(1000, 1, 9, 0.05) == schedule.poisson_examples(
        1000, 1, 9, 0.05)


def test_total_steps() -> None:
    assert schedule.total_steps(10, epochs=None, max_steps=7, global_batch=4) == 7
    assert schedule.total_steps(10, epochs=2, max_steps=None, global_batch=4) == 5
    assert schedule.total_steps(10, epochs=None, max_steps=None, global_batch=4) == 3


def test_gates_report_each_outcome() -> None:
    spec = GateSpec(max_eval_loss=2.0, max_canary_exposure=3.0, max_mia_auc=0.6,
                    max_epsilon=8.0)
    measured = gates.Measurements(eval_loss=1.5, max_canary_exposure=4.0, mia_auc=0.55,
                                  epsilon=None, adapter_changed=True)
    outcomes = {o.name: o.passed for o in gates.evaluate(spec, measured)}
    assert outcomes == {"WeightsChanged": True, "EvalLoss": True, "CanaryExposure": False,
                        "MembershipInferenceAuc": True, "Epsilon": False}
    unchanged = gates.Measurements(None, None, None, None, adapter_changed=False)
    assert [(o.name, o.passed) for o in gates.evaluate(GateSpec(), unchanged)] == [
        ("WeightsChanged", False)]
