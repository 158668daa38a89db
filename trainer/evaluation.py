"""Measurements after training: held-out loss, canary exposure, membership-inference AUC and
whether the trained weights moved. Every process runs the same forwards (ZeRO-3 needs all
of them to take part), so every process reaches the same numbers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sealtune_trainer import canaries, membership
from sealtune_trainer.modeling import example_losses
from sealtune_trainer.tokenization import Example, collate

SCORE_BATCH = 32


@dataclass(frozen=True)
class Scored:
    loss_sum: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.loss_sum / max(1, self.tokens)


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def score(model: Any, examples: list[Example], pad_id: int, *, device: torch.device,
          dtype: torch.dtype) -> list[Scored]:
    """Summed token loss and labelled-token count of each example."""
    out: list[Scored] = []
    with evaluating(model):
        for start in range(0, len(examples), SCORE_BATCH):
            batch = collate(examples[start : start + SCORE_BATCH], pad_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                losses, counts = example_losses(model, batch)
            out.extend(Scored(float(s), int(c)) for s, c in zip(losses, counts, strict=True))
    return out


def mean_loss(scored: list[Scored]) -> float:
    """Token-weighted mean loss."""
    return sum(s.loss_sum for s in scored) / max(1, sum(s.tokens for s in scored))


def canary_exposures(model: Any, planted: list[canaries.Canary], *,
                     encode: Any, pad_id: int, device: torch.device,
                     dtype: torch.dtype) -> list[float]:
    """Exposure of each canary among its candidates."""
    exposures = []
    for canary in planted:
        texts = [canary.text, *canary.candidates]
        # Log-perplexity of the whole sequence (summed token loss), as in the paper.
        losses = [s.loss_sum for s in score(model, [encode(t) for t in texts], pad_id,
                                            device=device, dtype=dtype)]
        rank = canaries.rank_of(losses[0], losses[1:])
        exposures.append(canaries.exposure(rank, len(texts)))
    return exposures


def mia_auc(member_losses: list[float], nonmember_losses: list[float]) -> float:
    """AUC of the loss attack: lower loss is taken as evidence of membership."""
    return membership.auc([-x for x in member_losses], [-x for x in nonmember_losses])


def weights_changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """True when some trained tensor changed and, for LoRA, the adapter is not a no-op: its B
    matrices start at zero, and an adapter whose B stayed zero changes nothing whatever the
    loss says."""
    if not before or before.keys() != after.keys():
        return False
    lora_b = [tensor for name, tensor in after.items() if "lora_B" in name]
    if lora_b and not any(bool(tensor.any()) for tensor in lora_b):
        return False
    return any(not torch.equal(before[name], after[name]) for name in before)
