"""The plain-PyTorch stepper's speed on a GPU, without changing what it computes.

- The loss: `CausalLoss` returns the summed token loss and the labelled-token count of a
  batch. On CUDA with liger-kernel installed it runs the decoder and then Liger's fused
  linear cross-entropy on the final hidden states, chunk by chunk, so the full
  (tokens x vocabulary) logits are never materialised, in fp32 or at all. Elsewhere it is the
  plain computation (`modeling.example_losses`).
- Fused kernels: Liger's RMSNorm, SwiGLU and RoPE (Triton), patched into the model instance.
- Optionally `torch.compile` of each decoder layer (one compiled graph shared by all layers).
- The micro-batch: as many of a step's examples as fit in the GPU memory actually free,
  found by probing a forward and backward pass at the longest sequence length.

liger-kernel needs a GPU and Triton, so it is imported lazily and only on CUDA; the CPU path
never touches it.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from typing import Any

import torch

from sealtune_trainer.modeling import example_losses, model_inputs
from sealtune_trainer.tokenization import IGNORE

log = logging.getLogger("sealtune.trainer")

Batch = dict[str, torch.Tensor]


def kernels_available(device: torch.device) -> bool:
    """Whether Liger's kernels can be used here: a CUDA device and the package installed."""
    return device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def causal_lm(model: Any) -> Any:
    """The transformers *ForCausalLM beneath a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _fusable(model: Any) -> bool:
    """The fused loss needs a decoder (`.model`) and a plain, frozen-or-not bias-free
    `lm_head` Linear with nothing applied to the logits afterwards."""
    lm = causal_lm(model)
    head = getattr(lm, "lm_head", None)
    config = getattr(lm, "config", None)
    return (isinstance(getattr(lm, "model", None), torch.nn.Module)
            and type(head) is torch.nn.Linear and head.bias is None
            and getattr(config, "final_logit_softcapping", None) is None
            and getattr(config, "logit_scale", None) is None)


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Labels moved one position left (token t predicts label t+1), IGNORE at the end."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)


class CausalLoss(torch.nn.Module):
    """`forward(batch) -> (summed token loss, labelled tokens)`, both 0-d tensors. A module
    so that DistributedDataParallel can wrap it; its only parameters are the model's."""

    def __init__(self, model: torch.nn.Module, *, fused: bool) -> None:
        super().__init__()
        self.model = model
        self.fused = (fused and _fusable(model)
                      and importlib.util.find_spec("liger_kernel") is not None)
        if self.fused:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            self.fused_loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE,
                                                               reduction="sum")

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.fused:
            losses, counts = example_losses(self.model, batch)
            return losses.sum(), counts.sum()
        lm = causal_lm(self.model)
        hidden = lm.model(**model_inputs(batch), use_cache=False).last_hidden_state
        targets = shifted_targets(batch["labels"]).reshape(-1)
        loss = self.fused_loss(lm.lm_head.weight, hidden.reshape(-1, hidden.shape[-1]),
                               targets)
        return loss, (targets != IGNORE).sum()


def apply_kernels(model: Any) -> bool:
    """Liger's RMSNorm, SwiGLU and RoPE in place of the model's own (same arithmetic, fused);
    False where the architecture is not one Liger knows. Call after peft wrapping."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    lm = causal_lm(model)
    try:
        _apply_liger_kernel_to_instance(model=lm, rope=True, rms_norm=True, swiglu=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
    except Exception as error:  # an architecture Liger does not cover stays as it is
        log.info("fused kernels not applied: %s", error)
        return False
    return True


def compile_layers(model: Any) -> int:
    """torch.compile of each decoder layer; returns how many were compiled."""
    layers = getattr(getattr(causal_lm(model), "model", None), "layers", None)
    if layers is None:
        return 0
    import torch._dynamo

    # One graph serves every layer; leave room for a few shapes (the batch's length varies).
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for layer in layers:
        layer.compile()
    return len(layers)


def _probe(loss_module: torch.nn.Module, size: int, seq_len: int, vocab: int, *,
           device: torch.device, dtype: torch.dtype) -> None:
    ids = torch.randint(3, max(4, vocab), (size, seq_len), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss, count = loss_module(batch)
    (loss / count.clamp(min=1)).backward()


def fit_micro_batch(loss_module: torch.nn.Module, model: Any, *, want: int, seq_len: int,
                    device: torch.device, dtype: torch.dtype, headroom: float = 0.08) -> int:
    """The largest micro-batch <= `want` whose forward and backward at `seq_len` tokens fit in
    the GPU's memory with `headroom` (a share of the card) to spare, found by trying it.
    Gradients from the probes are dropped; nothing else changes."""
    if device.type != "cuda" or want <= 1:
        return max(1, want)
    total = torch.cuda.get_device_properties(device).total_memory
    vocab = int(getattr(causal_lm(model).config, "vocab_size", 4))
    params = [p for p in model.parameters() if p.requires_grad]
    state = torch.random.get_rng_state(), torch.cuda.get_rng_state(device)
    size = want
    try:
        while size > 1:
            fits = True
            torch.cuda.reset_peak_memory_stats(device)
            try:
                _probe(loss_module, size, seq_len, vocab, device=device, dtype=dtype)
                fits = torch.cuda.max_memory_allocated(device) <= (1 - headroom) * total
            except torch.OutOfMemoryError:
                fits = False
            for p in params:
                p.grad = None
            gc.collect()
            torch.cuda.empty_cache()
            if fits:
                break
            size = size - 1 if size <= 8 else size * 3 // 4
    finally:
        torch.random.set_rng_state(state[0])
        torch.cuda.set_rng_state(state[1], device)
    log.info("micro-batch %d of %d examples fits at %d tokens", size, want, seq_len)
    return size


def speed_up(model: Any, device: torch.device, *, kernels: bool, compile_decoder: bool) -> \
        dict[str, Any]:
    """Applies what is asked and available; returns what was applied (for the logs)."""
    applied: dict[str, Any] = {"fusedLoss": False, "fusedKernels": False, "compiledLayers": 0}
    if device.type != "cuda":
        return applied
    if kernels and kernels_available(device):
        applied["fusedLoss"] = _fusable(model)
        applied["fusedKernels"] = not compile_decoder and apply_kernels(model)
    if compile_decoder:
        applied["compiledLayers"] = compile_layers(model)
    return applied
