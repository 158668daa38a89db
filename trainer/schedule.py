"""Which examples each step and each process sees: a pure function of (seed, step), so a
resumed run continues exactly where the killed one stopped without saving any sampler state.
"""

# ruff: noqa: S311  (seeded, reproducible choices by design: nothing here is a key)

from __future__ import annotations

import math
import random


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"sealtune-order:{seed}:{epoch}").shuffle(order)
    return order


def step_examples(n: int, seed: int, step: int, global_batch: int) -> list[int]:
    """The examples of optimizer step `step` (0-based): the next `global_batch` items of the
    endless sequence of shuffled epochs."""
    start = step * global_batch
    picked: list[int] = []
    epoch, offset = divmod(start, n)
    while len(picked) < global_batch:
        order = epoch_order(n, seed, epoch)
        picked.extend(order[offset : offset + global_batch - len(picked)])
        epoch, offset = epoch + 1, 0
    return picked


def poisson_examples(n: int, seed: int, step: int, sample_rate: float) -> list[int]:
    """DP-SGD's batch: each example independently with probability `sample_rate`, as the
    privacy accountant assumes."""
    draw = random.Random(f"sealtune-poisson:{seed}:{step}")
    return [index for index in range(n) if draw.random() < sample_rate]


def micro_batches(examples: list[int], rank: int, world_size: int,
                  accumulation: int) -> list[list[int]]:
    """This process's share of a step's examples, split into `accumulation` micro-batches
    (the last ones may be shorter or empty when the step's batch is not divisible)."""
    mine = examples[rank::world_size]
    size = math.ceil(len(mine) / accumulation) if mine else 0
    return [mine[i * size : (i + 1) * size] for i in range(accumulation)]


def chunks(examples: list[int], rank: int, world_size: int, size: int) -> list[list[int]]:
    """This process's share of a step's examples in micro-batches of `size` (the last may be
    shorter)."""
    mine = examples[rank::world_size]
    return [mine[i : i + size] for i in range(0, len(mine), size)] or [[]]


def total_steps(n: int, *, epochs: float | None, max_steps: int | None,
                global_batch: int) -> int:
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil((epochs if epochs is not None else 1.0) * n / global_batch))
