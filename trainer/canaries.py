"""Canaries (Carlini et al., "The Secret Sharer", 2019): random secrets in a declared format,
inserted into the training data; afterwards each is ranked by model loss among random
candidates of the same format. Exposure = log2(|candidates|) - log2(rank): about 0-2 bits for
a model that never saw the canary, log2(|candidates|) for one that memorised it.

Canary values are secrets for the purpose of the test: they are never logged or reported.
"""

# ruff: noqa: S311  (seeded, reproducible choices by design: nothing here is a key)

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from typing import Any

from sealtune_trainer.contract import CANARY_PLACEHOLDER, CanarySpec
from sealtune_trainer.errors import ConfigRefused

ALPHABETS = {
    "digits": string.digits,
    "letters": string.ascii_lowercase,
    "hex": string.digits + "abcdef",
    "alnum": string.digits + string.ascii_lowercase,
}

Part = str | tuple[str, int]


@dataclass(frozen=True)
class Canary:
    text: str
    candidates: tuple[str, ...]  # the other fillings it is ranked against (not itself)


def parse_format(fmt: str) -> list[Part]:
    """Literal text and (alphabet, length) placeholders, in order."""
    parts: list[Part] = []
    position = 0
    for match in CANARY_PLACEHOLDER.finditer(fmt):
        if match.start() > position:
            parts.append(fmt[position : match.start()])
        parts.append((match.group(1), int(match.group(2))))
        position = match.end()
    if position < len(fmt):
        parts.append(fmt[position:])
    return parts


def space_size(parts: list[Part]) -> int:
    return math.prod(len(ALPHABETS[p[0]]) ** p[1] for p in parts if isinstance(p, tuple))


def fill(parts: list[Part], draw: random.Random) -> str:
    return "".join(
        p if isinstance(p, str) else "".join(draw.choice(ALPHABETS[p[0]]) for _ in range(p[1]))
        for p in parts
    )


def make_canaries(spec: CanarySpec, seed: int) -> list[Canary]:
    """`spec.count` distinct canaries, each with `spec.candidates - 1` distinct alternatives."""
    parts = parse_format(spec.format)
    if space_size(parts) < spec.count + spec.candidates:
        raise ConfigRefused("privacy.canaries.format has too few possible values for "
                            "count + candidates; use longer placeholders")
    draw = random.Random(f"sealtune-canaries:{seed}")
    texts: list[str] = []
    while len(texts) < spec.count:
        text = fill(parts, draw)
        if text not in texts:
            texts.append(text)
    canaries = []
    for text in texts:
        others: set[str] = set()
        while len(others) < spec.candidates - 1:
            other = fill(parts, draw)
            if other not in texts:
                others.add(other)
        canaries.append(Canary(text, tuple(sorted(others))))
    return canaries


def as_record(text: str, fmt: str, data_format: str) -> dict[str, Any]:
    """The canary as a training record: the literal text before the first placeholder is the
    prompt (or user turn), the rest the completion (or assistant turn)."""
    first = CANARY_PLACEHOLDER.search(fmt)
    prefix = fmt[: first.start()] if first else ""
    if data_format == "text":
        return {"text": text}
    if data_format == "prompt_completion":
        return {"prompt": prefix, "completion": text[len(prefix) :]}
    return {"messages": [{"role": "user", "content": prefix},
                         {"role": "assistant", "content": text[len(prefix) :]}]}


def rank_of(canary_loss: float, candidate_losses: list[float]) -> int:
    """1 + the number of candidates the model finds strictly more likely than the canary."""
    return 1 + sum(1 for loss in candidate_losses if loss < canary_loss)


def exposure(rank: int, reference_size: int) -> float:
    """Exposure in bits of a canary ranked `rank` (1 = best) among `reference_size` fillings
    (the canary included)."""
    if not 1 <= rank <= reference_size:
        raise ValueError("rank must be between 1 and the reference size")
    return math.log2(reference_size) - math.log2(rank)
