"""Trainer benchmark (not a test): sealtune's training step against a transformers Trainer +
peft baseline on the same randomly initialised Llama, the same batches and settings, in one
process; plus the data path's decrypt-and-verify throughput.

    python hack/bench/trainer_bench.py                      # tiny model, CPU
    python hack/bench/trainer_bench.py --shape 8b --steps 20 --warmup 5   # on an H100/H200

MFU counts 4 FLOPs per frozen weight per token (forward + input gradient; the input
embedding is a lookup and is not counted), 6 per adapter weight per token, and 6 x layers x
seq x hidden per token for causal attention, against 989 TFLOP/s (H100 dense bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from sealtune_trainer import dataset, manifest, records, sealing, steppers, tiny
from sealtune_trainer.contract import TrainerConfig
from sealtune_trainer.distributed import Topology
from sealtune_trainer.modeling import prepare
from sealtune_trainer.tokenization import Example, collate

PEAK_FLOPS = 989e12
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128, "vocab": 512,
             "seq": 128},
    "small": {"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 1536,
              "vocab": 8192, "seq": 256},
    "8b": {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "ffn": 14336,
           "vocab": 128256, "seq": 2048},
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(shape: dict[str, int], device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import LlamaForCausalLM

    config = tiny.llama_config(shape["vocab"], hidden=shape["hidden"], layers=shape["layers"],
                               heads=shape["heads"], kv_heads=shape["kv_heads"],
                               ffn=shape["ffn"], max_positions=shape["seq"])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # an 8B model built in fp32 would not fit beside the run
    try:
        with device:
            return LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)


def trainer_config(args: argparse.Namespace, shape: dict[str, int], precision: str,
                   steps: int) -> TrainerConfig:
    return TrainerConfig.model_validate({
        "data": {"path": "/unused", "format": "text", "manifestDigest": "sha256:" + "0" * 64},
        "model": {"path": "/unused"},
        "method": {"type": "lora", "r": args.lora_r, "alpha": args.lora_alpha,
                   "targetModules": TARGETS},
        "training": {"maxSteps": steps, "batchSize": args.batch_size,
                     "maxSeqLength": shape["seq"], "precision": precision,
                     "gradientCheckpointing": args.gradient_checkpointing,
                     "learningRate": 2e-4, "lrScheduler": "constant"},
        "output": {"dir": "/unused"},
    })


def flops_per_token(model: Any, shape: dict[str, int]) -> float:
    embedding = model.get_input_embeddings().weight
    frozen = sum(p.numel() for p in model.parameters()
                 if not p.requires_grad and p is not embedding)
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * frozen + 6 * adapter + 6 * shape["layers"] * shape["seq"] * shape["hidden"]


def rows(shape: dict[str, int], count: int) -> list[Example]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, shape["vocab"], (count, shape["seq"]), generator=generator)
    return [Example(row.tolist(), row.tolist()) for row in ids]


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_sealtune(args: argparse.Namespace, shape: dict[str, int], device: torch.device,
                   dtype: torch.dtype, data: list[Example]) -> dict[str, Any]:
    _reset_memory(device)
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    config = trainer_config(args, shape, precision, args.warmup + args.steps)
    model = prepare(build_model(shape, device, dtype), config, device)
    flops = flops_per_token(model, shape)
    stepper = steppers.TorchStepper(model, config, total_steps=args.warmup + args.steps,
                                    topology=Topology(), device=device, dtype=dtype)
    batch = args.batch_size
    losses, started = [], 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            started = time.perf_counter()
        chunk = [data[(step * batch + i) % len(data)] for i in range(batch)]
        outcome = stepper.step([collate(chunk, 0)])
        losses.append(outcome.loss_sum / outcome.labelled_tokens)
    _sync(device)
    seconds = time.perf_counter() - started
    result = {"tokens_per_s": args.steps * batch * shape["seq"] / seconds,
              "peak_gib": _peak_gib(device), "flops_per_token": flops,
              "first_loss": losses[0], "last_loss": losses[-1]}
    del stepper, model
    return result



class Rows(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Tokenised examples as the transformers Trainer takes them: labels are the inputs."""

    def __init__(self, data: list[Example]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.data[index].input_ids)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

def bench_baseline(args: argparse.Namespace, shape: dict[str, int], device: torch.device,
                   dtype: torch.dtype, data: list[Example]) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    _reset_memory(device)
    model = get_peft_model(build_model(shape, device, dtype), LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=TARGETS,
        task_type="CAUSAL_LM"))
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            if state.global_step == args.warmup:
                _sync(device)
                marks["start"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=args.batch_size,
            max_steps=args.warmup + args.steps, learning_rate=2e-4, lr_scheduler_type="constant",
            bf16=dtype == torch.bfloat16, logging_steps=10**9, save_strategy="no",
            report_to=[], dataloader_num_workers=0, use_cpu=device.type == "cpu",
            max_grad_norm=1.0, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=arguments, train_dataset=Rows(data),
                          callbacks=[Clock()])
        trainer.train()
    _sync(device)
    seconds = time.perf_counter() - marks["start"]
    result = {"tokens_per_s": args.steps * args.batch_size * shape["seq"] / seconds,
              "peak_gib": _peak_gib(device)}
    del trainer, model
    return result


def bench_data_path(megabytes: int) -> dict[str, float]:
    """MB/s of plaintext through hash-check + chunked AES-GCM decryption (and with JSONL
    parsing), from a sealed data set on local disk (page-cached)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        plain, sealed = root / "plain", root / "sealed"
        plain.mkdir()
        line = json.dumps({"text": "the grey heron eats 7 fish every day. " * 20}) + "\n"
        per_file = max(1, megabytes // 8) * 2**20
        for index in range(8):
            (plain / f"part-{index}.jsonl").write_text(line * (per_file // len(line)))
        key_file = root / "key"
        with contextlib.redirect_stdout(io.StringIO()):  # the CLI prints the digest
            dataset.main(["keygen", str(key_file)])
            dataset.main(["encrypt", "--key", str(key_file), str(plain), str(sealed)])
        key = sealing.load_key(key_file)
        document = manifest.load(sealed / "manifest.json")
        started = time.perf_counter()
        total = sum(len(text) for _, text in records.verified_contents(
            sealed, document, key, manifest_name="manifest.json"))
        verify_seconds = time.perf_counter() - started
        started = time.perf_counter()
        records.load(sealed, manifest_name="manifest.json",
                     expected_digest=manifest.digest_of(document), encrypted=True, key=key,
                     data_format="text")
        load_seconds = time.perf_counter() - started
    return {"plaintext_mb": total / 1e6, "decrypt_verify_mb_per_s": total / 1e6 / verify_seconds,
            "with_parsing_mb_per_s": total / 1e6 / load_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq", type=int, help="sequence length (default: the shape's)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--decrypt-mb", type=int, default=64)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    shape = dict(SHAPES[args.shape])
    if args.seq:
        shape["seq"] = args.seq
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = (torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported()
             else torch.float32)
    data = rows(shape, 64)
    report: dict[str, Any] = {"shape": args.shape, **shape, "device": (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "dtype": str(dtype), "batch_size": args.batch_size, "lora_r": args.lora_r}
    report["sealtune"] = bench_sealtune(args, shape, device, dtype, data)
    if not args.skip_baseline:
        report["baseline"] = bench_baseline(args, shape, device, dtype, data)
    flops = report["sealtune"]["flops_per_token"]
    for name in ("sealtune", "baseline"):
        if name in report:
            report[name]["mfu"] = report[name]["tokens_per_s"] * flops / PEAK_FLOPS
    if "baseline" in report:
        report["speedup"] = report["sealtune"]["tokens_per_s"] / report["baseline"]["tokens_per_s"]
    report["data_path"] = bench_data_path(args.decrypt_mb)

    print(f"device {report['device']}  shape {args.shape}  seq {shape['seq']}  "
          f"batch {args.batch_size}  {report['dtype']}")
    for name in ("baseline", "sealtune"):
        if name in report:
            figures = report[name]
            peak = (f"{figures['peak_gib']:.1f} GiB" if figures["peak_gib"] is not None
                    else "n/a")
            print(f"{name:>9}: {figures['tokens_per_s']:>10,.0f} tokens/s  "
                  f"MFU {100 * figures['mfu']:.1f}%  peak {peak}")
    if "speedup" in report:
        print(f"  speedup: {report['speedup']:.2f}x sealtune / baseline")
    data_path = report["data_path"]
    print(f"data path: decrypt+verify {data_path['decrypt_verify_mb_per_s']:,.0f} MB/s, "
          f"with JSONL parsing {data_path['with_parsing_mb_per_s']:,.0f} MB/s "
          f"({data_path['plaintext_mb']:.0f} MB)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
