"""One training run, after the data has been verified: load, train (resuming from the latest
checkpoint), evaluate, compare with the gates and write the outputs. Imports torch."""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sealtune_trainer import (
    canaries,
    checkpoints,
    distributed,
    evaluation,
    fast,
    gates,
    inputs,
    membership,
    modeling,
    outputs,
    schedule,
    steppers,
    tokenization,
)
from sealtune_trainer.contract import TrainerConfig
from sealtune_trainer.distributed import Topology
from sealtune_trainer.errors import ConfigRefused
from sealtune_trainer.records import DataSet
from sealtune_trainer.telemetry import Metrics, log

MEMORY_SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())  # noqa: S108
"""Where sealed checkpoints are opened to resume: the pod's memory-backed /dev/shm."""


@dataclass
class Prepared:
    """Tokenised data: what trains, what is held out, what is planted."""

    train_items: list[tokenization.Example]
    members: list[tokenization.Example]
    held_out: list[tokenization.Example]
    planted: list[canaries.Canary]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Plan:
    """How long the run is and where it stands."""

    total: int
    global_batch: int
    sample_rate: float  # a step's expected share of the examples (DP-SGD's Poisson rate)
    start: int = 0
    losses: list[float] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _step_seed(seed: int, step: int, rank: int) -> int:
    # Dropout in step s draws from a stream fixed by (seed, s, rank), so a resumed run makes
    # the same draws as an uninterrupted one without saving RNG state.
    return (seed * 1_000_003 + step * 7_919 + rank) % 2**63


def prepare_data(config: TrainerConfig, data: DataSet, tokenizer: Any) -> Prepared:
    training, evaluation_spec = config.training, config.evaluation
    fmt = config.data.format

    def encode(record: dict[str, Any]) -> tokenization.Example:
        return tokenization.encode(tokenizer, record, training.max_seq_length)

    train_idx, held_idx = membership.split(len(data.records), evaluation_spec.holdout_fraction,
                                           training.seed)
    cap = evaluation_spec.max_examples
    held = membership.sample(held_idx, cap, training.seed, "held-out")
    member_idx = membership.sample(train_idx, len(held), training.seed, "members")
    planted: list[canaries.Canary] = []
    extra: list[dict[str, Any]] = []
    if (spec := config.privacy.canaries) is not None:
        planted = canaries.make_canaries(spec, training.seed)
        extra = [canaries.as_record(c.text, spec.format, fmt)
                 for c in planted for _ in range(spec.repetitions)]
    examples = [encode(data.records[i]) for i in train_idx] + [encode(r) for r in extra]
    items = examples
    if training.packing:
        shuffled = list(examples)
        random.Random(f"sealtune-pack:{training.seed}").shuffle(shuffled)  # noqa: S311
        items = tokenization.pack(shuffled, training.max_seq_length)
    return Prepared(
        train_items=items,
        members=[encode(data.records[i]) for i in member_idx],
        held_out=[encode(data.records[i]) for i in held],
        planted=planted,
        counts={"records": len(data.records), "trainExamples": len(examples),
                "trainRows": len(items), "heldOut": len(held_idx),
                "canaryRecords": len(extra)},
    )


def _make_stepper(config: TrainerConfig, model: Any, plan: Plan, *, topology: Topology,
                  device: torch.device, dtype: torch.dtype) -> steppers.Stepper:
    if config.deepspeed is not None:
        return steppers.DeepSpeedStepper(model, config, total_steps=plan.total, device=device,
                                         dtype=dtype)
    if config.privacy.dp is not None:
        return steppers.PrivateStepper(model, config, total_steps=plan.total,
                                       sample_rate=plan.sample_rate, device=device, dtype=dtype)
    return steppers.TorchStepper(model, config, total_steps=plan.total, topology=topology,
                                 device=device, dtype=dtype)


def _gathered(config: TrainerConfig, module: Any) -> contextlib.AbstractContextManager[Any]:
    """Under ZeRO-3 each process holds a slice of every weight; this makes them whole for
    the duration (every process must enter it)."""
    if config.deepspeed is None or config.deepspeed.zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    params = [p for p in module.parameters() if p.requires_grad]
    gathered: contextlib.AbstractContextManager[Any] = deepspeed.zero.GatheredParameters(
        params, modifier_rank=None)
    return gathered


def _save_checkpoint(stepper: steppers.Stepper, store: checkpoints.Store, step: int,
                     state: dict[str, Any], topology: Topology) -> None:
    if topology.is_main:
        store.prepare(step)
    distributed.barrier()
    stepper.save(store.staging(step))
    distributed.barrier()
    if topology.is_main:
        store.publish(step, state)
        log.info("checkpoint saved at step %d", step)
    distributed.barrier()


class Trainer:
    """Holds what one run needs; `run` is the whole sequence."""

    def __init__(self, config: TrainerConfig, data: DataSet, metrics: Metrics,
                 topology: Topology) -> None:
        self.config, self.data, self.metrics, self.topology = config, data, metrics, topology
        self.device = distributed.device_for(topology)
        self.dtype = modeling.compute_dtype(config.training.precision, self.device)
        self.micro_batch: int | None = None
        self.store = inputs.checkpoint_store(config)

    def run(self) -> dict[str, Any]:
        config = self.config
        modeling.check_supported(config, self.device)
        if config.privacy.dp is not None and self.topology.distributed:
            raise ConfigRefused("privacy.dp runs in a single process (workers 1)",
                                reason="PrivacyNeedsOneWorker")
        distributed.start(self.topology, self.device, deepspeed=config.deepspeed is not None)
        try:
            return self._run()
        finally:
            distributed.stop()

    def _plan(self, n_items: int) -> Plan:
        training = self.config.training
        local_batch = training.batch_size * training.gradient_accumulation
        global_batch = local_batch * self.topology.world_size
        total = schedule.total_steps(n_items, epochs=training.epochs,
                                     max_steps=training.max_steps, global_batch=global_batch)
        return Plan(total=total, global_batch=global_batch,
                    sample_rate=min(1.0, local_batch / n_items))

    def _run(self) -> dict[str, Any]:
        config, training = self.config, self.config.training
        started = time.monotonic()
        self.metrics.phase.state("loading")
        _seed_everything(training.seed)
        tokenizer = modeling.load_tokenizer(config)
        prepared = prepare_data(config, self.data, tokenizer)
        model = modeling.load_model(config, self.device, self.dtype)
        initial = modeling.trainable_state(model)
        plan = self._plan(len(prepared.train_items))
        plain = config.deepspeed is None and config.privacy.dp is None
        if plain:
            applied = fast.speed_up(model, self.device, kernels=training.fused_kernels,
                                    compile_decoder=training.compile_layers)
            log.info("speed: %s", applied)
        stepper = _make_stepper(config, model, plan, topology=self.topology,
                                device=self.device, dtype=self.dtype)
        self.micro_batch = training.micro_batch_size
        if plain and self.micro_batch is None and self.device.type == "cuda":
            assert isinstance(stepper, steppers.TorchStepper)
            longest = max(len(item.input_ids) for item in prepared.train_items)
            self.micro_batch = fast.fit_micro_batch(
                stepper.loss_module, model,
                want=training.batch_size * training.gradient_accumulation,
                seq_len=longest, device=self.device, dtype=self.dtype)
        if self.store is not None:
            with self.store.opened_newest(MEMORY_SCRATCH) as resumed:
                if resumed is not None:
                    stepper.load(resumed.files)
                    plan.start, plan.losses = resumed.step, resumed.losses
                    log.info("resuming from checkpoint at step %d of %d", plan.start,
                             plan.total)
        self.metrics.planned_steps.set(plan.total)
        self.metrics.step.set(plan.start)

        self.metrics.phase.state("training")
        trained_tokens = self._train(stepper, prepared, plan, tokenizer.pad_token_id)
        seconds = time.monotonic() - started

        self.metrics.phase.state("evaluating")
        measured, details = self._evaluate(stepper, tokenizer, prepared, initial, plan)
        outcomes = gates.evaluate(config.evaluation.gates, measured)
        result: dict[str, Any] = {
            "ok": True, "dataDigest": self.data.manifest_digest, "steps": plan.total,
            "resumedFromStep": plan.start,
            "firstLoss": plan.losses[0] if plan.losses else None,
            "finalLoss": plan.losses[-1] if plan.losses else None,
            "evalLoss": measured.eval_loss, "canaryExposure": measured.max_canary_exposure,
            "miaAuc": measured.mia_auc, "epsilon": measured.epsilon,
            "delta": details["privacy"].get("delta"),
            "weightsChanged": measured.adapter_changed,
            "gatesPassed": all(o.passed for o in outcomes),
            "gates": [o.as_json() for o in outcomes],
        }
        metrics_doc = {
            "result": result, "lossPerStep": plan.losses, **details,
            "data": {"manifestDigest": self.data.manifest_digest, "files": self.data.files,
                     "bytes": self.data.bytes_read, **prepared.counts},
            "training": {"worldSize": self.topology.world_size,
                         "globalBatch": plan.global_batch, "method": config.method.type,
                         "dtype": str(self.dtype),
                         "deepspeedZeroStage": config.deepspeed.zero_stage
                         if config.deepspeed else None,
                         "inputTokensThisProcess": trained_tokens,
                         "seconds": round(seconds, 3)},
        }
        self.metrics.phase.state("writing")
        with _gathered(config, stepper.module):
            if self.topology.is_main:
                result["manifestDigest"], result["files"] = self._write_outputs(
                    stepper.module, tokenizer, metrics_doc)
        distributed.barrier()
        self.metrics.phase.state("succeeded")
        return result

    def _evaluate(self, stepper: steppers.Stepper, tokenizer: Any, prepared: Prepared,
                  initial: dict[str, torch.Tensor],
                  plan: Plan) -> tuple[gates.Measurements, dict[str, Any]]:
        config, module, pad = self.config, stepper.module, tokenizer.pad_token_id
        device, dtype = self.device, self.dtype
        held = evaluation.score(module, prepared.held_out, pad, device=device, dtype=dtype)
        members = evaluation.score(module, prepared.members, pad, device=device, dtype=dtype)
        exposures: list[float] = []
        if (spec := config.privacy.canaries) is not None:
            def encode_canary(text: str) -> tokenization.Example:
                record = canaries.as_record(text, spec.format, config.data.format)
                return tokenization.encode(tokenizer, record, config.training.max_seq_length)

            exposures = evaluation.canary_exposures(module, prepared.planted,
                                                    encode=encode_canary, pad_id=pad,
                                                    device=device, dtype=dtype)
        privacy = self._privacy(stepper, plan)
        with _gathered(config, module):
            changed = evaluation.weights_changed(initial, modeling.trainable_state(module))
        measured = gates.Measurements(
            eval_loss=evaluation.mean_loss(held),
            max_canary_exposure=max(exposures) if exposures else None,
            mia_auc=evaluation.mia_auc([s.mean for s in members], [s.mean for s in held]),
            epsilon=privacy.get("epsilon"), adapter_changed=changed)
        return measured, {"privacy": privacy, "canaryExposures": exposures}

    def _train(self, stepper: steppers.Stepper, prepared: Prepared, plan: Plan,
               pad_id: int) -> int:
        training, topology = self.config.training, self.topology
        items, n = prepared.train_items, len(prepared.train_items)
        total, losses, store = plan.total, plan.losses, self.store
        interval_tokens, interval_start, all_tokens = 0, time.monotonic(), 0
        pin = self.device.type == "cuda"

        def batches_of(step: int) -> list[dict[str, torch.Tensor]]:
            if self.config.privacy.dp is not None:
                chosen = schedule.poisson_examples(n, training.seed, step, plan.sample_rate)
                groups = [chosen[i : i + training.batch_size]
                          for i in range(0, len(chosen), training.batch_size)]
            else:
                chosen = schedule.step_examples(n, training.seed, step,
                                                training.batch_size
                                                * training.gradient_accumulation
                                                * topology.world_size)
                if self.micro_batch is None:
                    groups = schedule.micro_batches(chosen, topology.rank, topology.world_size,
                                                    training.gradient_accumulation)
                else:
                    groups = schedule.chunks(chosen, topology.rank, topology.world_size,
                                             self.micro_batch)
            return [tokenization.collate([items[i] for i in g], pad_id, pin=pin)
                    for g in groups if g]

        # The next step's batches are built (and pinned) on a thread while this step runs.
        prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sealtune-batches")
        upcoming = prefetch.submit(batches_of, plan.start) if plan.start < total else None
        try:
            for step in range(plan.start, total):
                torch.manual_seed(_step_seed(training.seed, step, topology.rank))
                assert upcoming is not None
                batches = upcoming.result()
                upcoming = prefetch.submit(batches_of, step + 1) if step + 1 < total else None
                outcome = stepper.step(batches)
                loss_sum, labelled = distributed.sum_across(
                    [outcome.loss_sum, float(outcome.labelled_tokens)], self.device)
                loss = loss_sum / max(1.0, labelled)
                losses.append(round(loss, 6))
                interval_tokens += outcome.input_tokens
                all_tokens += outcome.input_tokens
                self.metrics.step.set(step + 1)
                self.metrics.loss.set(loss)
                self.metrics.tokens.inc(outcome.input_tokens)
                done = step + 1
                if done % training.log_every == 0 or done == total:
                    elapsed = max(1e-9, time.monotonic() - interval_start)
                    rate = interval_tokens / elapsed
                    self.metrics.tokens_per_second.set(rate)
                    log.info("step %d/%d loss %.4f tokens/s %.0f", done, total, loss, rate)
                    interval_tokens, interval_start = 0, time.monotonic()
                every = training.checkpoint_every
                if store is not None and (done % every == 0 or done == total):
                    _save_checkpoint(stepper, store, done, {"step": done, "losses": losses},
                                     topology)
        finally:
            prefetch.shutdown(wait=False, cancel_futures=True)
        return all_tokens

    def _privacy(self, stepper: steppers.Stepper, plan: Plan) -> dict[str, Any]:
        dp = self.config.privacy.dp
        if dp is None or not isinstance(stepper, steppers.PrivateStepper):
            return {}
        epsilon = steppers.spent_epsilon(dp.accountant, stepper.noise_multiplier,
                                         plan.sample_rate, plan.total, dp.delta)
        return {"epsilon": epsilon, "delta": dp.delta, "accountant": dp.accountant,
                "steps": plan.total, "sampleRate": plan.sample_rate,
                "noiseMultiplier": stepper.noise_multiplier, "maxGradNorm": dp.max_grad_norm}

    def _write_outputs(self, module: Any, tokenizer: Any,
                       metrics_doc: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        directory = Path(self.config.output.dir)
        staging = outputs.prepare(directory)
        modeling.save_outputs(modeling.unwrap(module), tokenizer, staging)
        outputs.write_metrics(staging, metrics_doc)
        written = outputs.write_manifest(staging)
        outputs.publish(staging, directory)
        return written
