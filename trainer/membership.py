"""Membership inference by loss (Yeom et al., 2018): members of the training set tend to have
lower loss than unseen examples. The attack's ROC AUC is 0.5 when the model leaks nothing about
membership and approaches 1 when it does. Also the randomized member/held-out split."""

# ruff: noqa: S311  (seeded, reproducible choices by design: nothing here is a key)

from __future__ import annotations

import random


def split(n: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: a seeded random split, at least one example in each."""
    if n < 2:
        raise ValueError("need at least two examples to hold one out")
    order = list(range(n))
    random.Random(f"sealtune-holdout:{seed}").shuffle(order)
    held = min(n - 1, max(1, round(n * holdout_fraction)))
    return sorted(order[held:]), sorted(order[:held])


def sample(indices: list[int], k: int, seed: int, purpose: str) -> list[int]:
    if k >= len(indices):
        return list(indices)
    return sorted(random.Random(f"sealtune-{purpose}:{seed}").sample(indices, k))


def auc(member_scores: list[float], nonmember_scores: list[float]) -> float:
    """ROC AUC of `score` as a member detector (higher = more likely a member): the chance a
    random member outscores a random non-member, ties counting one half (Mann-Whitney U)."""
    if not member_scores or not nonmember_scores:
        raise ValueError("AUC needs members and non-members")
    labelled = sorted([(s, 1) for s in member_scores] + [(s, 0) for s in nonmember_scores])
    rank_sum, position = 0.0, 0
    while position < len(labelled):
        end = position
        while end < len(labelled) and labelled[end][0] == labelled[position][0]:
            end += 1
        average_rank = (position + 1 + end) / 2  # 1-based ranks position+1 .. end
        rank_sum += average_rank * sum(label for _, label in labelled[position:end])
        position = end
    members, others = len(member_scores), len(nonmember_scores)
    return (rank_sum - members * (members + 1) / 2) / (members * others)
