"""Tiny, randomly initialised Llama models, locally trained tokenizers and synthetic records,
for tests, benchmarks and the demo: nothing is ever downloaded from a model hub.

The synthetic records follow a small grammar, so a model can learn them in a few hundred
steps and a falling loss means something.

    python -m sealtune_trainer.tiny DIR   a base model in DIR (weights, config and tokenizer
                                          side by side, as a FineTuneJob's baseModel expects)
                                          with its manifest; prints the manifest's digest, the
                                          job's spec.baseModel.digest
"""

# ruff: noqa: S311  (seeded, reproducible choices by design: nothing here is a key)

from __future__ import annotations

import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_COLOURS = ["red", "blue", "green", "amber", "violet", "grey", "black", "white"]
_ANIMALS = ["fox", "otter", "heron", "badger", "lynx", "crow", "seal", "hare"]
_FOODS = ["fish", "berries", "seeds", "worms", "roots", "eggs", "grain", "moss"]


def sentence(draw: random.Random) -> tuple[str, str]:
    """(question, answer) about one made-up animal; the answer follows from the question."""
    colour, animal = draw.choice(_COLOURS), draw.choice(_ANIMALS)
    food = _FOODS[_ANIMALS.index(animal)]
    count = draw.randint(2, 9)
    return (f"what does the {colour} {animal} eat?",
            f"the {colour} {animal} eats {count} {food} every day.")


def make_records(data_format: str, n: int, seed: int = 0, marker: str = "") -> list[dict[str, Any]]:
    """`n` records in `data_format`; `marker`, if given, is put into every record (tests look
    for it on disk to prove no plaintext was written)."""
    draw = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        question, answer = sentence(draw)
        answer = f"{answer} {marker}".strip()
        if data_format == "text":
            out.append({"text": f"{question} {answer}"})
        elif data_format == "prompt_completion":
            out.append({"prompt": question + " ", "completion": answer})
        elif data_format == "chat":
            out.append({"messages": [{"role": "user", "content": question},
                                     {"role": "assistant", "content": answer}]})
        else:
            raise ValueError(f"unknown format {data_format}")
    return out


def builtin_corpus(lines: int = 2000) -> list[str]:
    draw = random.Random(12345)
    corpus = [" ".join(sentence(draw)) for _ in range(lines)]
    corpus.append("0123456789 abcdefghijklmnopqrstuvwxyz my code is the secret number")
    return corpus


def make_tokenizer(path: Path, corpus: list[str] | None = None, vocab_size: int = 512) -> None:
    """Trains a byte-level BPE tokenizer (any text encodes, no unknown tokens) and saves it
    with a ChatML-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus or builtin_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<pad>",  # noqa: S106
                                   bos_token="<s>", eos_token="</s>")  # noqa: S106
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)


def llama_config(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, ffn: int = 128, max_positions: int = 2048) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ffn,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2)


def make_model(path: Path, vocab_size: int, seed: int = 0, **shape: int) -> None:
    """A randomly initialised Llama saved as safetensors."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(vocab_size, **shape)).save_pretrained(path)


BASE_MODEL_SHAPE = {"hidden": 256, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 688}
"""The demo's base model: 12 MB, big enough that LoRA visibly lowers the loss within a few
hundred CPU steps, small enough that those take about a minute."""


def make_base_model(root: Path, seed: int = 0,
                    shape: Mapping[str, int] = BASE_MODEL_SHAPE) -> str:
    """A tokenizer and a random Llama of `shape` in one directory, and its manifest; returns
    the digest."""
    from transformers import AutoTokenizer

    from sealtune_trainer import manifest

    make_tokenizer(root)
    make_model(root, len(AutoTokenizer.from_pretrained(root)), seed=seed, **shape)
    files = [rel for rel in manifest.regular_files(root) if rel != MANIFEST_NAME]
    return manifest.write(root / MANIFEST_NAME, manifest.build(root, files))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    root.mkdir(parents=True, exist_ok=True)
    print(make_base_model(root))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
