"""Records to token ids and labels (-100 where no loss is taken), packing, and padding.

Loss is taken on what the model should learn to produce: all of a `text` record, the
completion of a `prompt_completion` record, the assistant turns of a `chat` record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealtune_trainer.errors import DataRejected
from sealtune_trainer.records import Record

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    # Packed rows only: each token's position within its own example.
    positions: list[int] | None = None


def _assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[range]]:
    """The rendered conversation and the character spans of its assistant turns, found by
    rendering growing prefixes (each render must extend the previous one)."""
    full: str = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False,
                                               add_generation_prompt=True) if index else ""
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (full.startswith(through) and through.startswith(before)):
            raise DataRejected("the tokenizer's chat template does not render conversations "
                               "prefix by prefix; cannot find the assistant turns",
                               reason="ChatTemplateUnsupported")
        spans.append(range(len(before), len(through)))
    return full, spans


def encode(tokenizer: Any, record: Record, max_length: int) -> Example:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if "text" in record:
        ids = tokenizer(record["text"], add_special_tokens=True)["input_ids"] + eos
        labels = list(ids)
    elif "prompt" in record:
        prompt = tokenizer(record["prompt"], add_special_tokens=True)["input_ids"]
        completion = tokenizer(record["completion"], add_special_tokens=False)["input_ids"] + eos
        ids = prompt + completion
        labels = [IGNORE] * len(prompt) + completion
    else:
        if getattr(tokenizer, "chat_template", None) is None:
            raise DataRejected("chat records need a tokenizer with a chat template",
                               reason="ChatTemplateMissing")
        text, spans = _assistant_spans(tokenizer, record["messages"])
        # The template writes its own special tokens, so none are added here.
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        labels = [
            token if any(start in span for span in spans) else IGNORE
            for token, (start, _end) in zip(ids, encoded["offset_mapping"], strict=True)
        ]
    return Example(ids[:max_length], labels[:max_length])


def pack(examples: list[Example], row_length: int) -> list[Example]:
    """Concatenates examples into rows of exactly `row_length` tokens (the tail is dropped).
    The first token of each example gets no label: nothing in the previous example predicts
    it. Each token's position restarts at 0 with each example (an example split across two
    rows continues its count), so attention stays within examples (see `collate`)."""
    rows: list[Example] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        ids.extend(example.input_ids)
        labels.extend([IGNORE, *example.labels[1:]])
        positions.extend(range(len(example.input_ids)))
        while len(ids) >= row_length:
            rows.append(Example(ids[:row_length], labels[:row_length], positions[:row_length]))
            ids, labels = ids[row_length:], labels[row_length:]
            positions = positions[row_length:]
    if not rows and ids:
        rows.append(Example(ids, labels, positions))
    return rows


def segments(positions: list[int]) -> list[int]:
    """Which example each token of a packed row belongs to (0, 1, ...): a new one starts
    wherever the position does not follow on from the previous token's."""
    out: list[int] = []
    for index, position in enumerate(positions):
        starts = index > 0 and position != positions[index - 1] + 1
        out.append((out[-1] + int(starts)) if out else 0)
    return out


def collate(examples: list[Example], pad_id: int, *, pin: bool = False) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, labels; and position_ids when the
    rows are packed (padding continues the last example's positions and has no label).
    `pin` puts them in page-locked memory for an asynchronous copy to a GPU."""
    import torch

    width = max(len(example.input_ids) for example in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    packed = any(example.positions is not None for example in examples)
    positions = torch.zeros((len(examples), width), dtype=torch.long) if packed else None
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
        if positions is not None:
            own = example.positions if example.positions is not None else list(range(n))
            last = own[-1] if own else -1
            positions[row, :n] = torch.tensor(own)
            positions[row, n:] = torch.arange(last + 1, last + 1 + width - n)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if positions is not None:
        batch["position_ids"] = positions
    if pin:
        batch = {key: value.pin_memory() for key, value in batch.items()}
    return batch
