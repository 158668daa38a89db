"""One optimizer step, three ways: plain PyTorch (DDP across processes), DeepSpeed ZeRO, and
DP-SGD through Opacus. Each also saves and restores its own resumable state.

All three take the micro-batches of one step and return (summed token loss, labelled
tokens, input tokens) for this process, so the loop above them is the same.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from sealtune_trainer import fast
from sealtune_trainer.contract import TrainerConfig
from sealtune_trainer.distributed import Topology
from sealtune_trainer.modeling import example_losses
from sealtune_trainer.tokenization import IGNORE

Batch = dict[str, torch.Tensor]
TORCH_STATE = "torch_state.pt"


@dataclass
class StepOutcome:
    loss_sum: float
    labelled_tokens: int
    input_tokens: int


class Stepper(Protocol):
    @property
    def module(self) -> Any: ...

    def step(self, micro_batches: list[Batch]) -> StepOutcome: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


def lr_lambda(config: TrainerConfig, total_steps: int) -> Callable[[int], float]:
    warmup, kind = config.training.warmup_steps, config.training.lr_scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "linear":
            return 1.0 - progress
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def _optimizer(params: list[torch.nn.Parameter], config: TrainerConfig,
               device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.training.learning_rate,
                             weight_decay=config.training.weight_decay,
                             fused=device.type == "cuda")


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _restore_trainable(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = {name for name, p in params.items() if p.requires_grad} - set(saved)
    if missing:
        raise RuntimeError(f"checkpoint lacks {len(missing)} trainable tensors")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)

class _TorchState(Protocol):
    """A stepper whose state is its trainable weights, optimizer and scheduler."""

    _module: torch.nn.Module
    optimizer: Any
    scheduler: Any
    device: torch.device


def _save_state(stepper: _TorchState, directory: Path) -> None:
    torch.save({"trainable": _trainable_state(stepper._module),
                "optimizer": stepper.optimizer.state_dict(),
                "scheduler": stepper.scheduler.state_dict()}, directory / TORCH_STATE)


def _load_state(stepper: _TorchState, directory: Path) -> None:
    state = torch.load(directory / TORCH_STATE, map_location=stepper.device, weights_only=True)
    _restore_trainable(stepper._module, state["trainable"])
    stepper.optimizer.load_state_dict(state["optimizer"])
    stepper.scheduler.load_state_dict(state["scheduler"])



def labelled_tokens(batch: Batch) -> int:
    """Tokens that carry a loss (each predicts the next token's label)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


class TorchStepper:
    """Plain PyTorch; DistributedDataParallel when the world has several processes.

    The step's loss is the mean over all its labelled tokens, however its examples are split
    into micro-batches, so the micro-batch size (chosen from free GPU memory) changes the
    speed and not the update. On a GPU the loss is computed without materialising the
    logits (see `fast.CausalLoss`), and the host reads the step's figures once, after the
    optimizer step is queued."""

    def __init__(self, model: torch.nn.Module, config: TrainerConfig, *, total_steps: int,
                 topology: Topology, device: torch.device, dtype: torch.dtype,
                 fused: bool | None = None) -> None:
        self._module, self.device, self.dtype = model, device, dtype
        self.optimizer = _optimizer(_trainable(model), config, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config, total_steps))
        if fused is None:
            fused = config.training.fused_kernels and fast.kernels_available(device)
        self.loss_module = fast.CausalLoss(model, fused=fused)
        self.model: torch.nn.Module = self.loss_module
        if topology.distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None)
        self.is_main = topology.is_main

    @property
    def module(self) -> Any:
        return self._module

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        # Gradients are all-reduced once per step, on the last micro-batch.
        no_sync = getattr(self.model, "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def step(self, micro_batches: list[Batch]) -> StepOutcome:
        counts = [labelled_tokens(batch) for batch in micro_batches]  # host tensors: no sync
        total = max(1, sum(counts))
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        inputs = 0
        for index, host_batch in enumerate(micro_batches):
            batch = _to(host_batch, self.device)
            with self._no_sync(index == len(micro_batches) - 1):
                with _autocast(self.device, self.dtype):
                    summed, _ = self.model(batch)
                (summed / total).backward()
            loss_sum += summed.detach().float()
            inputs += int(host_batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(_trainable(self._module), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(float(loss_sum), sum(counts), inputs)

    def save(self, directory: Path) -> None:
        # Every rank holds the same state, so one copy is enough.
        if self.is_main:
            _save_state(self, directory)

    def load(self, directory: Path) -> None:
        _load_state(self, directory)


class DeepSpeedStepper:
    """DeepSpeed ZeRO (stage 0, 2 or 3). DeepSpeed scales the loss for gradient accumulation
    and steps the optimizer on the last micro-batch of each step itself."""

    def __init__(self, model: torch.nn.Module, config: TrainerConfig, *, total_steps: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        import deepspeed

        spec, training = config.deepspeed, config.training
        assert spec is not None
        zero: dict[str, Any] = {"stage": spec.zero_stage}
        if spec.offload == "cpu":
            zero["offload_optimizer"] = {"device": "cpu"}
            if spec.zero_stage == 3:
                zero["offload_param"] = {"device": "cpu"}
        ds_config = {
            "train_micro_batch_size_per_gpu": training.batch_size,
            "gradient_accumulation_steps": training.gradient_accumulation,
            "gradient_clipping": 1.0,
            "zero_optimization": zero,
            "bf16": {"enabled": dtype == torch.bfloat16},
            # sealtune's AdamW is a plain torch optimizer, which DeepSpeed calls untested.
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 2**31 - 1,
        }
        self.device, self.dtype = device, dtype
        factor = lr_lambda(config, total_steps)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=_trainable(model), config=ds_config,
            optimizer=_optimizer(_trainable(model), config, device),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor))

    @property
    def module(self) -> Any:
        return self.engine.module

    def step(self, micro_batches: list[Batch]) -> StepOutcome:
        outcome = StepOutcome(0.0, 0, 0)
        for host_batch in micro_batches:
            batch = _to(host_batch, self.device)
            losses, counts = example_losses(self.engine, batch)
            tokens = counts.sum()
            self.engine.backward(losses.sum() / tokens.clamp(min=1))
            self.engine.step()
            outcome.loss_sum += float(losses.detach().sum())
            outcome.labelled_tokens += int(tokens.detach())
            outcome.input_tokens += int(batch["attention_mask"].sum())
        return outcome

    def save(self, directory: Path) -> None:
        # Every rank writes its shard; the frozen base model is not copied into checkpoints.
        self.engine.save_checkpoint(str(directory.parent), tag=directory.name,
                                    save_latest=False, exclude_frozen_parameters=True)

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory.parent), tag=directory.name,
                                              load_module_strict=False)
        if path is None:
            raise RuntimeError("DeepSpeed could not load the checkpoint")


class PrivateStepper:
    """DP-SGD (Opacus): each example's gradient clipped to maxGradNorm, Gaussian noise added
    once per step, on Poisson-sampled batches of expected size batchSize x
    gradientAccumulation. One process only."""

    def __init__(self, model: torch.nn.Module, config: TrainerConfig, *, total_steps: int,
                 sample_rate: float, device: torch.device, dtype: torch.dtype) -> None:
        from opacus import GradSampleModule
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer

        dp = config.privacy.dp
        assert dp is not None
        self.noise_multiplier = get_noise_multiplier(
            target_epsilon=dp.target_epsilon, target_delta=dp.delta, sample_rate=sample_rate,
            steps=total_steps, accountant=dp.accountant)
        self.device, self.dtype, self._module = device, dtype, model
        self.model = GradSampleModule(model, loss_reduction="mean")
        base = _optimizer(_trainable(model), config, device)
        self.optimizer = DPOptimizer(base, noise_multiplier=self.noise_multiplier,
                                     max_grad_norm=dp.max_grad_norm,
                                     expected_batch_size=config.training.batch_size
                                     * config.training.gradient_accumulation,
                                     loss_reduction="mean")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(base, lr_lambda(config, total_steps))

    @property
    def module(self) -> Any:
        return self._module

    def step(self, micro_batches: list[Batch]) -> StepOutcome:
        outcome = StepOutcome(0.0, 0, 0)
        work: list[Batch | None] = [b for b in micro_batches if b["input_ids"].shape[0]]
        if not work:
            # An empty Poisson batch still takes a noisy step, as the accountant assumes.
            for p in _trainable(self._module):
                empty = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
                p.grad_sample = empty  # type: ignore[attr-defined]
            work = [None]
        for index, host_batch in enumerate(work):
            self.optimizer.signal_skip_step(do_skip=index < len(work) - 1)
            if host_batch is not None:
                batch = _to(host_batch, self.device)
                with _autocast(self.device, self.dtype):
                    losses, counts = example_losses(self.model, batch)
                # Per-example mean, so clipping bounds each example's whole contribution.
                (losses / counts.clamp(min=1)).mean().backward()  # type: ignore[no-untyped-call]
                outcome.loss_sum += float(losses.detach().sum())
                outcome.labelled_tokens += int(counts.sum())
                outcome.input_tokens += int(batch["attention_mask"].sum())
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return outcome

    def save(self, directory: Path) -> None:
        _save_state(self, directory)

    def load(self, directory: Path) -> None:
        _load_state(self, directory)


def spent_epsilon(accountant: str, noise_multiplier: float, sample_rate: float, steps: int,
                  delta: float) -> float:
    """Epsilon after `steps` steps; a pure function of the steps taken, so resume-safe."""
    from opacus.accountants import create_accountant

    tracker = create_accountant(accountant)
    tracker.history = [(noise_multiplier, sample_rate, steps)]
    return float(tracker.get_epsilon(delta))
