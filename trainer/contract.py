"""The trainer's configuration contract: what the operator writes, as JSON, into the job's
ConfigMap and what `python -m sealtune_trainer --config FILE` reads.

This module is an API shared with the operator, so it imports nothing heavy (pydantic and the
standard library only): the operator imports it to build the ConfigMap and must never pull in
torch. Field names are snake_case in Python and camelCase on the wire.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

API_VERSION: Final = "trainer.sealtune.dev/v1alpha1"

SHA256_DIGEST = r"^sha256:[0-9a-f]{64}$"

# A placeholder in a canary format: `{digits:6}` is six random decimal digits.
CANARY_PLACEHOLDER = re.compile(r"\{(digits|letters|hex|alnum):([1-9][0-9]?)\}")

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class _Spec(BaseModel):
    """Common model settings: camelCase on the wire, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class DataSpec(_Spec):
    """Where the training data lives and what it must hash to."""

    path: str = Field(
        min_length=1,
        description="Directory holding the data set: its manifest and the files it lists.",
    )
    format: Literal["text", "prompt_completion", "chat"] = Field(
        description=(
            "Record shape of every JSONL line: `text` is {\"text\"}, `prompt_completion` is "
            "{\"prompt\", \"completion\"} (loss on the completion only), `chat` is "
            "{\"messages\": [{\"role\", \"content\"}]} rendered with the tokenizer's chat "
            "template (loss on assistant turns only)."
        )
    )
    manifest_file: str = Field(
        default="manifest.json",
        min_length=1,
        description="Name of the data-set manifest inside `path`. Default `manifest.json`.",
    )
    manifest_digest: str = Field(
        pattern=SHA256_DIGEST,
        description=(
            "Expected `sha256:<hex>` of the manifest's canonical bytes (sorted keys, no "
            "whitespace). Training refuses to start when the manifest or any listed file "
            "differs."
        ),
    )
    encrypted: bool = Field(
        default=False,
        description=(
            "The files are sealed with `python -m sealtune_trainer.dataset encrypt` "
            "(AES-256-GCM in authenticated chunks) and are decrypted in memory only. Must "
            "match the manifest's `encryption` field."
        ),
    )
    key_file: str | None = Field(
        default=None,
        description=(
            "Data key file, required when `encrypted`: 32 raw bytes, 64 hex characters or "
            "the base64 of 32 bytes (Vault transit's data-key form). A relative path is "
            "resolved against `secretsDir`."
        ),
    )

    @model_validator(mode="after")
    def _key_with_encryption(self) -> DataSpec:
        if self.encrypted and not self.key_file:
            raise ValueError("data.keyFile is required when data.encrypted is true")
        if not self.encrypted and self.key_file:
            raise ValueError("data.keyFile cannot be set unless data.encrypted is true")
        return self


class ModelSpec(_Spec):
    """The base model, loaded from local files only (nothing is downloaded) and only after
    every file in its directory matched the manifest pinned by digest."""

    path: str = Field(
        min_length=1,
        description="Directory of the base model (transformers) and its tokenizer, side by "
        "side, with `manifest.json` listing every file.",
    )
    manifest_digest: str = Field(
        pattern=SHA256_DIGEST,
        description=(
            "Expected `sha256:<hex>` of the model's `manifest.json` (canonical bytes, as for "
            "data). Before anything is loaded, every listed file must match its size and "
            "sha256 and the directory may hold nothing else: no unlisted file, no symlink."
        ),
    )


DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj")


class LoraMethod(_Spec):
    """Low-rank adapters (peft) on a frozen base model."""

    type: Literal["lora"] = Field(description="`lora`.")
    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank. Default 16.")
    alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling alpha. Default 32.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Adapter dropout. Default 0.")
    target_modules: tuple[str, ...] = Field(
        default=DEFAULT_TARGET_MODULES,
        min_length=1,
        description="Module names that get adapters. Default: all seven Llama projections.",
    )


class QloraMethod(LoraMethod):
    """LoRA on a quantised base model (bitsandbytes). Needs CUDA; refused on CPU."""

    type: Literal["qlora"] = Field(description="`qlora`.")  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(default=4, description="Base weight bits. Default 4 (NF4).")


class FullMethod(_Spec):
    """Every weight trained; the output is a whole model rather than an adapter."""

    type: Literal["full"] = Field(description="`full`.")


Method = Annotated[LoraMethod | QloraMethod | FullMethod, Field(discriminator="type")]


class TrainingSpec(_Spec):
    """Optimisation settings. One step is one optimizer update over the global batch
    (batchSize x gradientAccumulation x world size examples)."""

    epochs: float | None = Field(
        default=None, gt=0, le=1000, description="Passes over the data. Default 1 unless maxSteps."
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps; cannot be set together with epochs."
    )
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        default="cosine", description="Decay after warm-up. Default cosine."
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps. Default 0.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay. Default 0.")
    batch_size: int = Field(default=1, ge=1, le=4096, description="Examples per micro-batch.")
    gradient_accumulation: int = Field(
        default=1, ge=1, le=4096, description="Micro-batches per optimizer step. Default 1."
    )
    max_seq_length: int = Field(
        default=1024, ge=8, le=1_048_576, description="Tokens per example (or per packed row)."
    )
    packing: bool = Field(
        default=False,
        description="Concatenate examples into rows of maxSeqLength tokens (no padding).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of every random choice.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="`auto` is bf16 where the GPU supports it, else fp32."
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward to save memory."
    )
    micro_batch_size: int | None = Field(
        default=None, ge=1, le=4096,
        description="Examples per forward pass. Default: on a GPU (plain PyTorch, no DP-SGD) as "
        "many of a step's batchSize x gradientAccumulation examples as fit in the memory free; "
        "elsewhere batchSize. The update of a step is the same either way.",
    )
    fused_kernels: bool = Field(
        default=True,
        description="On a CUDA GPU with liger-kernel installed: fused RMSNorm, SwiGLU, RoPE and "
        "linear cross-entropy (the logits are never materialised). Same arithmetic.",
    )
    compile_layers: bool = Field(
        default=True,
        description="On a CUDA GPU: torch.compile each decoder layer (fuses norms, SwiGLU, "
        "RoPE and the adapters' element-wise work). Ignored elsewhere.",
    )
    checkpoint_every: int = Field(
        default=0,
        ge=0,
        description="Save a sealed checkpoint every N steps and resume from the newest one "
        "that authenticates; 0 never (and nothing is resumed).",
    )
    log_every: int = Field(default=10, ge=1, description="Log progress every N steps.")

    @model_validator(mode="after")
    def _one_length(self) -> TrainingSpec:
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("training.epochs and training.maxSteps cannot both be set")
        return self


class DeepSpeedSpec(_Spec):
    """DeepSpeed ZeRO. Absent: plain PyTorch (DDP when several processes)."""

    zero_stage: Literal[0, 2, 3] = Field(default=2, description="ZeRO stage. Default 2.")
    offload: Literal["none", "cpu"] = Field(
        default="none",
        description="Offload optimizer state (and, at stage 3, parameters) to CPU memory.",
    )


class DifferentialPrivacySpec(_Spec):
    """DP-SGD (Opacus): per-example clipping and Gaussian noise, Poisson-sampled batches."""

    target_epsilon: float = Field(gt=0, le=100, description="Privacy budget to spend.")
    delta: float = Field(
        default=1e-5, gt=0, lt=1, description="Delta; keep it below 1/number of examples."
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="Per-example clipping norm.")
    accountant: Literal["rdp", "prv"] = Field(default="rdp", description="Privacy accountant.")


class CanarySpec(_Spec):
    """Random secrets inserted into the training data to measure memorisation."""

    count: int = Field(default=4, ge=1, le=1000, description="Distinct canaries.")
    format: str = Field(
        default="my code is {digits:6}",
        min_length=1,
        max_length=256,
        description=(
            "Canary text with placeholders `{digits:N}`, `{letters:N}`, `{hex:N}` or "
            "`{alnum:N}` that are filled with random characters."
        ),
    )
    repetitions: int = Field(default=1, ge=1, le=1000, description="Copies of each canary.")
    candidates: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Random candidates each canary is ranked against (exposure's reference).",
    )

    @model_validator(mode="after")
    def _has_placeholder(self) -> CanarySpec:
        if not CANARY_PLACEHOLDER.search(self.format):
            raise ValueError("privacy.canaries.format needs a placeholder such as {digits:6}")
        return self


class PrivacySpec(_Spec):
    """Differential privacy and memorisation measurement."""

    dp: DifferentialPrivacySpec | None = Field(default=None, description="DP-SGD; off if absent.")
    canaries: CanarySpec | None = Field(default=None, description="Canaries; off if absent.")


class GateSpec(_Spec):
    """Thresholds the evaluation is compared with; an absent threshold is not checked. The
    adapter-changed check always runs."""

    max_eval_loss: float | None = Field(default=None, gt=0, description="Held-out loss bound.")
    max_canary_exposure: float | None = Field(
        default=None, ge=0, description="Bound on the highest canary exposure (bits)."
    )
    max_mia_auc: float | None = Field(
        default=None, ge=0, le=1, description="Bound on the membership-inference AUC."
    )
    max_epsilon: float | None = Field(
        default=None, gt=0, description="Bound on spent epsilon; fails when DP is off."
    )


class EvaluationSpec(_Spec):
    """Held-out evaluation and leakage checks."""

    holdout_fraction: float = Field(
        default=0.1,
        gt=0,
        le=0.5,
        description="Share of examples held out: eval loss and the MIA non-members.",
    )
    max_examples: int = Field(
        default=512, ge=2, description="Cap on held-out (and member) examples scored."
    )
    gates: GateSpec = Field(default_factory=GateSpec, description="Pass/fail thresholds.")


class OutputSpec(_Spec):
    """Where results go."""

    dir: str = Field(
        min_length=1,
        description="Adapter, tokenizer, metrics and manifest. Must not exist yet: the run "
        "creates it, whole, when its outputs are written.",
    )
    checkpoint_dir: str | None = Field(
        default=None, description="Resumable checkpoints; required if checkpointEvery > 0."
    )
    checkpoint_key_file: str | None = Field(
        default=None,
        description="Key that seals every checkpoint file (the job's data key, which Vault wraps "
        "under the job's own transit key: deleting that key shreds the checkpoints); only what "
        "authenticates under it is loaded to resume. A relative path is resolved against "
        "`secretsDir`. Required if checkpointEvery > 0.",
    )
    termination_message_path: str = Field(
        default=DEFAULT_TERMINATION_MESSAGE_PATH,
        min_length=1,
        description="Where the JSON result (at most 4 KB) goes. Default /dev/termination-log.",
    )


class TrainerConfig(_Spec):
    """The whole trainer configuration (the ConfigMap's `config.json`)."""

    api_version: Literal["trainer.sealtune.dev/v1alpha1"] = Field(
        default=API_VERSION, description="Version of this contract."
    )
    data: DataSpec
    model: ModelSpec
    method: Method = Field(description="`lora`, `qlora` or `full`, selected by `type`.")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    deepspeed: DeepSpeedSpec | None = Field(default=None, description="ZeRO; off if absent.")
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output: OutputSpec
    metrics_port: int = Field(
        default=9400, ge=0, le=65535, description="Prometheus port (local rank 0); 0 disables."
    )
    secrets_dir: str = Field(
        default="/var/run/sealtune/secrets",
        min_length=1,
        description="In-memory volume the init container fills (the data key among them).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainerConfig:
        if self.privacy.dp is not None and self.deepspeed is not None:
            raise ValueError("privacy.dp cannot be combined with deepspeed (DP-SGD needs "
                             "per-example gradients, which ZeRO partitions away)")
        if self.training.checkpoint_every and not self.output.checkpoint_dir:
            raise ValueError("output.checkpointDir is required when checkpointEvery > 0")
        if self.training.checkpoint_every and not self.output.checkpoint_key_file:
            raise ValueError("output.checkpointKeyFile is required when checkpointEvery > 0: "
                             "checkpoints are always sealed, and only what authenticates "
                             "is loaded")
        if self.privacy.dp is not None and self.training.packing:
            raise ValueError("privacy.dp cannot be combined with packing: a packed row mixes "
                             "examples, so clipping would not bound one example's influence")
        return self

    def to_json(self) -> str:
        """The wire form (camelCase), as the operator writes it into the ConfigMap."""
        return self.model_dump_json(by_alias=True, exclude_none=True)
