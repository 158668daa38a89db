"""GPU speed benchmark (not a test): sealtune's trainer against the transformers Trainer + peft
baseline on the same GPU, model shape, data, sequence length and seed, in one process tree
(each configuration in its own child process, so peak memory is its own).

    python hack/bench/gpu_speed.py --shape 8b                 # on an H100/H200
    python hack/bench/gpu_speed.py --shape tiny --steps 5     # smoke run (CPU works too)

Prints tokens/s, MFU, peak memory and the ratio to the baseline, and the loss of the baseline
and of sealtune over the first --steps steps on identical batches (packing off, sequential
order, the same initial weights and adapters), with the largest relative difference. MFU
counts model FLOPs as in trainer_bench.py (4 per frozen weight per token, 6 per adapter
weight, 6 x layers x seq x hidden for causal attention) against 989 TFLOP/s.

Sealtune configurations (--variants, comma-separated, each `KERNELS@BATCH`):
  eager   the trainer's plain path (no fused loss, no kernels)
  liger   fused linear cross-entropy + Liger RMSNorm/SwiGLU/RoPE (compileLayers false)
  flce    fused linear cross-entropy only
  compile fused linear cross-entropy + torch.compile of each decoder layer (the trainer's
          GPU default)
BATCH `auto` picks the micro-batch from free memory as the trainer does (at most
--auto-want).

--method qlora: the same shape with the decoder's projections quantised in memory to 4-bit NF4
(bitsandbytes, double quantisation, bf16 compute; embeddings, norms and lm_head stay bf16, as
transformers' BitsAndBytesConfig loads them), from the same random weights in every child.
The baseline is the standard QLoRA setup (peft's prepare_model_for_kbit_training, no
gradient checkpointing, the transformers Trainer at --baseline-batch); sealtune goes through
the trainer's own qlora preparation (`modeling.prepare`). MFU counts the unquantised weight
count, so it is comparable with the LoRA figures. If torch.compile of a layer fails on the
4-bit layers, that run falls back to the Liger kernels and says so (`applied`).

    python hack/bench/gpu_speed.py --shape 8b --method qlora --steps 50   # needs CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))

PEAK_FLOPS = 989e12
INIT_SEED = 1234  # drawn right before the adapters are created, in both trainers


def _shape(args: argparse.Namespace) -> dict[str, int]:
    from trainer_bench import SHAPES

    shape = dict(SHAPES[args.shape])
    if args.seq:
        shape["seq"] = args.seq
    return shape


def _rows(shape: dict[str, int], count: int) -> list[Any]:
    from trainer_bench import rows

    return rows(shape, count)


def _device_dtype() -> tuple[Any, Any]:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = (torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported()
             else torch.float32)
    return device, dtype


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _quantise(model: Any, dtype: Any) -> int:
    """The decoder layers' Linear modules replaced, in place, by bitsandbytes NF4 Linear4bit
    (double quantisation, `dtype` compute) holding the same weights; returns how many."""
    import bitsandbytes as bnb
    import torch

    count = 0
    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            quantised = bnb.nn.Linear4bit(
                child.in_features, child.out_features, bias=child.bias is not None,
                compute_dtype=dtype, compress_statistics=True, quant_type="nf4",
                device="meta")
            quantised.weight = bnb.nn.Params4bit(
                child.weight.data, requires_grad=False, compress_statistics=True,
                quant_type="nf4", module=quantised).to(child.weight.device)
            if child.bias is not None:
                quantised.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, quantised)
            count += 1
    return count


def _build(args: argparse.Namespace, shape: dict[str, int], device: Any, dtype: Any) -> Any:
    """The base model of this run (4-bit for --method qlora), with the peak memory counter
    reset afterwards so that building and quantising do not count as training memory."""
    import gc

    import torch
    from trainer_bench import build_model

    base = build_model(shape, device, dtype)
    if args.method == "qlora":
        _quantise(base, dtype)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return base


def _flops_per_token(model: Any, shape: dict[str, int]) -> float:
    """trainer_bench.flops_per_token, counting a 4-bit weight as the weights it stands for."""
    import math

    embedding = model.get_input_embeddings().weight
    frozen = adapter = 0
    for p in model.parameters():
        quant_state = getattr(p, "quant_state", None)
        count = math.prod(quant_state.shape) if quant_state is not None else p.numel()
        if p.requires_grad:
            adapter += count
        elif p is not embedding:
            frozen += count
    return 4 * frozen + 6 * adapter + 6 * shape["layers"] * shape["seq"] * shape["hidden"]


def child_baseline(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from trainer_bench import TARGETS, Rows
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device, dtype = _device_dtype()
    shape, batch = _shape(args), job["batch"]
    steps = job["steps"]
    data = _rows(shape, steps * batch)
    base = _build(args, shape, device, dtype)
    if args.method == "qlora":  # the standard QLoRA preparation (fp32 upcast of the rest)
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    torch.manual_seed(INIT_SEED)
    model = get_peft_model(base, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha,
                                            target_modules=TARGETS, task_type="CAUSAL_LM"))
    model.config.use_cache = False
    flops = _flops_per_token(model, shape)

    recorded: list[torch.Tensor] = []
    marks: dict[int, float] = {}

    class InOrder(Trainer):
        def _get_train_sampler(self, *_: Any, **__: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            recorded.append((out[0] if return_outputs else out).detach().float())
            return out

    class Clock(TrainerCallback):
        def on_step_end(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            if state.global_step in (args.warmup, steps):
                _sync(device)
                marks[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=batch, max_steps=steps,
            learning_rate=2e-4, lr_scheduler_type="constant", bf16=dtype == torch.bfloat16,
            logging_steps=10**9, save_strategy="no", report_to=[], dataloader_num_workers=0,
            use_cpu=device.type == "cpu", max_grad_norm=1.0, disable_tqdm=True, seed=0)
        InOrder(model=model, args=arguments, train_dataset=Rows(data), callbacks=[Clock()]).train()
    seconds = marks[steps] - marks[args.warmup]
    return {"tokens_per_s": (steps - args.warmup) * batch * shape["seq"] / seconds,
            "peak_gib": _peak(device), "flops_per_token": flops,
            "losses": [float(v) for v in recorded]}


def child_sealtune(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from trainer_bench import trainer_config

    from sealtune_trainer import fast, steppers
    from sealtune_trainer.distributed import Topology
    from sealtune_trainer.modeling import prepare
    from sealtune_trainer.tokenization import collate

    device, dtype = _device_dtype()
    shape, batch, kernels = _shape(args), job["batch"], job["kernels"]
    steps = job["steps"]
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    args.batch_size, args.gradient_checkpointing = max(1, batch), False
    config = trainer_config(args, shape, precision, steps)
    if args.method == "qlora":
        from sealtune_trainer.contract import TrainerConfig

        spec = config.model_dump(by_alias=True)
        spec["method"] = {**spec["method"], "type": "qlora", "bits": 4}
        config = TrainerConfig.model_validate(spec)
    base = _build(args, shape, device, dtype)
    torch.manual_seed(INIT_SEED)
    model = prepare(base, config, device)
    flops = _flops_per_token(model, shape)
    applied: dict[str, Any] = {"kernels": kernels, "method": config.method.type}
    if kernels == "liger" and fast.kernels_available(device):
        applied["liger"] = fast.apply_kernels(model)
    if kernels == "compile":
        applied["compiled"] = fast.compile_layers(model)
    stepper = steppers.TorchStepper(model, config, total_steps=steps, topology=Topology(),
                                    device=device, dtype=dtype,
                                    fused=kernels != "eager" and fast.kernels_available(device))
    applied["fused_loss"] = stepper.loss_module.fused
    if batch == 0:  # auto: the largest that fits, as the trainer chooses it
        batch = applied["auto_batch"] = fast.fit_micro_batch(
            stepper.loss_module, model, want=args.auto_want, seq_len=shape["seq"],
            device=device, dtype=dtype)
    data = _rows(shape, steps * batch)
    pin = device.type == "cuda"
    losses, started = [], 0.0
    for step in range(steps):
        if step == args.warmup:
            _sync(device)
            started = time.perf_counter()
        chunk = data[step * batch:(step + 1) * batch]
        micro_batches = [collate(chunk, 0, pin=pin)]
        outcome = (_first_step(stepper, micro_batches, applied, device) if step == 0
                   else stepper.step(micro_batches))
        losses.append(outcome.loss_sum / outcome.labelled_tokens)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"tokens_per_s": (steps - args.warmup) * batch * shape["seq"] / seconds,
            "peak_gib": _peak(device), "flops_per_token": flops, "losses": losses,
            "applied": applied, "batch": batch}


def _first_step(stepper: Any, micro_batches: list[Any], applied: dict[str, Any],
                device: Any) -> Any:
    """The first step; where it fails with compiled layers (e.g. on 4-bit layers), the layers
    are uncompiled, Liger's kernels applied instead, and the step taken again."""
    from sealtune_trainer import fast

    try:
        return stepper.step(micro_batches)
    except Exception as error:
        if not applied.get("compiled"):
            raise
        applied["compile_failed"] = f"{type(error).__name__}: {error}"[:300]
        print(f"compile failed, falling back to Liger: {applied['compile_failed']}", flush=True)
    model = stepper.module
    for layer in fast.causal_lm(model).model.layers:
        layer._compiled_call_impl = None
    applied["compiled"] = 0
    applied["liger"] = fast.kernels_available(device) and fast.apply_kernels(model)
    stepper.optimizer.zero_grad(set_to_none=True)
    return stepper.step(micro_batches)


def _run_child(job: dict[str, Any], argv: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        command = [sys.executable, __file__, *argv, "--child", json.dumps(job),
                   "--child-out", result.name]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, timeout=timeout, check=False)
            ok = done.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        text = Path(result.name).read_text()
        out = json.loads(text) if ok and text else {"error": "failed or timed out"}
        out["wall_s"] = round(time.perf_counter() - started, 1)
        return out


def _parse_variants(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        kernels, _, batch = item.strip().partition("@")
        out.append((kernels, 0 if batch == "auto" else int(batch or 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--seq", type=int)
    parser.add_argument("--steps", type=int, default=50, help="steps of the loss comparison")
    parser.add_argument("--speed-steps", type=int, default=20,
                        help="steps of each extra speed run (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    parser.add_argument("--baseline-batch", type=int, default=1)
    parser.add_argument("--compare", default="compile",
                        help="sealtune kernels run at the baseline's batch for the loss check")
    parser.add_argument("--variants", default="compile@4,liger@4",
                        help="extra sealtune speed runs, KERNELS@BATCH, comma-separated")
    parser.add_argument("--auto-want", type=int, default=8,
                        help="the most examples a KERNELS@auto run may put in one micro-batch")
    parser.add_argument("--method", choices=("lora", "qlora"), default="lora",
                        help="qlora: 4-bit NF4 base weights (bitsandbytes, CUDA)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--budget-s", type=float, default=1e9,
                        help="skip the runs that would start after this many seconds")
    parser.add_argument("--job-timeout-s", type=float, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        job = json.loads(args.child)
        run = child_baseline if job["kind"] == "baseline" else child_sealtune
        Path(args.child_out).write_text(json.dumps(run(job, args)))
        return

    results, jobs = _run_jobs(args)
    _report(args, results, jobs)


def _run_jobs(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]],
                                                 list[tuple[str, dict[str, Any]]]]:
    argv = sys.argv[1:]
    began = time.perf_counter()
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("baseline", {"kind": "baseline", "batch": args.baseline_batch,
                      "steps": args.warmup + args.steps}),
        (f"sealtune {args.compare}@{args.baseline_batch}",
         {"kind": "sealtune", "kernels": args.compare, "batch": args.baseline_batch,
          "steps": args.warmup + args.steps}),
    ]
    for kernels, batch in _parse_variants(args.variants) if args.variants else []:
        jobs.append((f"sealtune {kernels}@{batch or 'auto'}",
                     {"kind": "sealtune", "kernels": kernels, "batch": batch,
                      "steps": args.warmup + args.speed_steps}))
    results: dict[str, dict[str, Any]] = {}
    for name, job in jobs:
        if time.perf_counter() - began > args.budget_s:
            results[name] = {"error": "skipped (budget)"}
            continue
        results[name] = _run_child(job, argv, args.job_timeout_s)
        figures = results[name]
        if "tokens_per_s" in figures:
            figures["mfu"] = figures["tokens_per_s"] * figures["flops_per_token"] / PEAK_FLOPS
        print(f"# {name}: {json.dumps({k: v for k, v in figures.items() if k != 'losses'})}",
              flush=True)
    return results, jobs


def _report(args: argparse.Namespace, results: dict[str, dict[str, Any]],
            jobs: list[tuple[str, dict[str, Any]]]) -> None:
    shape = _shape(args)
    base = results["baseline"]
    print(f"\n{args.method}  shape {args.shape}  seq {shape['seq']}  LoRA r={args.lora_r} "
          f"alpha={args.lora_alpha}")
    for name, figures in results.items():
        if "tokens_per_s" not in figures:
            print(f"{name:>22}: {figures.get('error')}")
            continue
        ratio = (figures["tokens_per_s"] / base["tokens_per_s"]
                 if "tokens_per_s" in base else float("nan"))
        peak = f"{figures['peak_gib']:.1f} GiB" if figures["peak_gib"] is not None else "n/a"
        print(f"{name:>22}: {figures['tokens_per_s']:>9,.0f} tokens/s  MFU "
              f"{100 * figures['mfu']:5.1f}%  peak {peak:>9}  {ratio:.2f}x baseline")
    compare = results[jobs[1][0]]
    if "losses" in base and "losses" in compare:
        pairs = list(zip(base["losses"], compare["losses"], strict=False))[: args.steps]
        diffs = [abs(s - b) / abs(b) for b, s in pairs]
        print(f"\nloss over the first {len(pairs)} steps (baseline / sealtune "
              f"{args.compare}@{args.baseline_batch}), identical batches:")
        for index in (0, 1, 2, 4, 9, 19, 29, 39, len(pairs) - 1):
            if index < len(pairs):
                b, s = pairs[index]
                print(f"  step {index + 1:>3}: {b:.4f} / {s:.4f}")
        worst = max(range(len(diffs)), key=diffs.__getitem__)
        print(f"  max relative difference {100 * diffs[worst]:.3f}% (step {worst + 1})")
        results["loss_max_rel_diff"] = {"value": diffs[worst], "step": worst + 1}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
