"""Loading the tokenizer and the base model and preparing it for the configured method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sealtune_trainer.contract import FullMethod, LoraMethod, QloraMethod, TrainerConfig
from sealtune_trainer.errors import ConfigRefused
from sealtune_trainer.tokenization import IGNORE


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_supported(config: TrainerConfig, device: torch.device) -> None:
    """Refusals that need no model: asked before anything large is loaded."""
    if isinstance(config.method, QloraMethod):
        if device.type != "cuda":
            raise ConfigRefused("QLoRA needs a CUDA GPU (bitsandbytes quantisation); this "
                                "process has none. Use method lora or full on CPU.",
                                reason="QloraNeedsGpu")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigRefused("QLoRA needs bitsandbytes (the `gpu` extra)",
                                reason="QloraNeedsGpu") from None


def load_tokenizer(config: TrainerConfig) -> Any:
    from transformers import AutoTokenizer

    # Beside the weights, so the model's manifest covers it too.
    tokenizer = AutoTokenizer.from_pretrained(config.model.path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: TrainerConfig, device: torch.device, dtype: torch.dtype) -> Any:
    """The model to train: peft-wrapped for (Q)LoRA, plain for full fine-tuning."""
    from transformers import AutoModelForCausalLM

    method = config.method
    kwargs: dict[str, Any] = {"local_files_only": True}
    if isinstance(method, QloraMethod):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=method.bits == 4, load_in_8bit=method.bits == 8,
            bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True)
        kwargs["device_map"] = {"": device}
    # Frozen weights are stored in the compute dtype; weights that train stay in fp32 (full
    # fine-tuning, adapters) and autocast runs their matmuls in the compute dtype.
    kwargs["dtype"] = torch.float32 if isinstance(method, FullMethod) else dtype
    model = AutoModelForCausalLM.from_pretrained(config.model.path, **kwargs)
    return prepare(model, config, device)


def prepare(model: Any, config: TrainerConfig, device: torch.device) -> Any:
    """Applies the method and memory settings to an already built base model."""
    method = config.method
    if config.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if isinstance(method, LoraMethod):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if isinstance(method, QloraMethod):
            model = _prepare_quantised(model, config, device, prepare_model_for_kbit_training)
        model = get_peft_model(model, LoraConfig(
            r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
            target_modules=list(method.target_modules), task_type="CAUSAL_LM"))
    if not isinstance(method, QloraMethod):
        model.to(device)
    return model


def _prepare_quantised(model: Any, config: TrainerConfig, device: torch.device,
                       kbit_prepare: Any) -> Any:
    """The quantised base frozen for adapter training. peft's `prepare_model_for_kbit_training`
    also upcasts every weight left unquantised (embeddings, norms, lm_head) to fp32, which
    guards fp16 training. In bf16 (fp32's exponent range) that upcast only costs memory and
    speed: an fp32 norm makes every hidden state fp32, each 4-bit matmul casts it down and
    back, and the fused loss would read an fp32 lm_head. So in bf16 the weights stay as
    loaded and only the frozen-base preparation is done."""
    if compute_dtype(config.training.precision, device) != torch.bfloat16:
        return kbit_prepare(model, use_gradient_checkpointing=config.training.gradient_checkpointing)
    for param in model.parameters():
        param.requires_grad = False
    if config.training.gradient_checkpointing:
        # Checkpointed blocks need an input that requires grad to run their backward.
        model.enable_input_require_grads()
    return model


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Copies of the weights that train, by name (what checkpoints and the change check use)."""
    return {name: p.detach().float().cpu().clone()
            for name, p in model.named_parameters() if p.requires_grad}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model is called with. Packed rows carry position ids that restart at each
    example and no attention mask: transformers then attends within each example only."""
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def example_losses(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """(sum of token losses, number of labelled tokens) per example."""
    logits = model(**model_inputs(batch), use_cache=False).logits
    labels = batch["labels"][:, 1:]
    shifted = logits[:, :-1]
    # Row-major (tokens, vocabulary): the class-dimension-second layout is far slower on GPUs.
    token_loss = torch.nn.functional.cross_entropy(
        shifted.float().reshape(-1, shifted.shape[-1]), labels.reshape(-1),
        ignore_index=IGNORE, reduction="none").view(labels.shape)
    counts = (labels != IGNORE).sum(dim=1)
    return token_loss.sum(dim=1), counts


def unwrap(model: Any) -> Any:
    """The module beneath DDP, DeepSpeed or Opacus wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def save_outputs(model: Any, tokenizer: Any, directory: Path) -> None:
    """Writes what is needed to load the result: the adapter (or full model) as safetensors,
    its config, and the tokenizer."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
