"""The ConfigMap holding the trainer's config contract: paths, method and hyperparameters,
never a secret value (secrets arrive as files in the pod's memory volume)."""

from __future__ import annotations

import json
from typing import Any

from sealtune_trainer.contract import TrainerConfig

from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..settings import Settings
from . import mounts
from .meta import child_metadata, workload_of
from .vault import DATA_KEY_FILE, INIT_CONFIG_FILE, JOB_KEY_FILE, init_config, init_config_json

DATA_FORMATS = {"text": "text", "promptCompletion": "prompt_completion", "chat": "chat"}
"""The domain's data format (API spelling) as the trainer's contract spells it."""


def trainer_config(job: FineTuneJob, domain: DataDomain, settings: Settings) -> TrainerConfig:
    spec = job.spec
    method: dict[str, Any] = {"type": spec.method.type}
    if spec.method.lora is not None:
        lora = spec.method.lora
        method |= {
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "targetModules": lora.target_modules,
        }
    if spec.method.qlora is not None:
        method["bits"] = spec.method.qlora.bits
    training = spec.training
    dp = spec.privacy.differential_privacy
    gates = spec.evaluation
    encrypted = domain.spec.encryption.type != "none"
    output_dir = f"{mounts.OUTPUT_DIR}/{workload_of(job, domain).output_dir}"
    return TrainerConfig.model_validate(
        {
            "data": {
                "path": mounts.DATA_DIR,
                "format": DATA_FORMATS[domain.spec.source.format],
                "manifestDigest": domain.spec.source.manifest_digest,
                "encrypted": encrypted,
                **({"keyFile": f"{mounts.SECRETS_DIR}/{DATA_KEY_FILE}"} if encrypted else {}),
            },
            "model": {"path": mounts.MODEL_DIR, "manifestDigest": spec.base_model.digest},
            "method": method,
            "training": {
                **({"epochs": training.epochs} if training.epochs else {}),
                **({"maxSteps": training.max_steps} if training.max_steps else {}),
                "learningRate": float(training.learning_rate),
                "batchSize": training.batch_size,
                "gradientAccumulation": training.gradient_accumulation_steps,
                "maxSeqLength": training.max_seq_length,
                "packing": training.packing,
                "seed": training.seed,
                "precision": training.precision,
                **(
                    {"checkpointEvery": training.checkpoint_every_steps}
                    if training.checkpoint_every_steps
                    else {}
                ),
            },
            **(
                {"deepspeed": {"zeroStage": spec.deepspeed.zero_stage, "offload": spec.deepspeed.offload}}
                if spec.deepspeed
                else {}
            ),
            "privacy": {
                **(
                    {
                        "dp": {
                            "targetEpsilon": dp.target_epsilon,
                            "delta": dp.delta,
                            "maxGradNorm": dp.max_grad_norm,
                        }
                    }
                    if dp
                    else {}
                ),
                **({"canaries": {"count": spec.privacy.canaries}} if spec.privacy.canaries else {}),
            },
            "evaluation": {
                "gates": {
                    "maxEvalLoss": gates.max_eval_loss,
                    "maxCanaryExposure": gates.max_canary_exposure,
                    "maxMiaAuc": gates.max_membership_inference_auc,
                    "maxEpsilon": dp.target_epsilon if dp else None,
                }
            },
            "output": {
                "dir": output_dir,
                # Beside the output, not in it: checkpoints are not part of what is signed.
                "checkpointDir": f"{output_dir}-checkpoints",
                **({"checkpointKeyFile": JOB_KEY_FILE} if domain.spec.encryption.vault_transit else {}),
                "terminationMessagePath": mounts.TERMINATION_MESSAGE_PATH,
            },
            "metricsPort": settings.metrics_port,
            "secretsDir": mounts.SECRETS_DIR,
        }
    )


def trainer_config_map(
    job: FineTuneJob, domain: DataDomain, settings: Settings, wrapped_job_key: str | None = None
) -> dict[str, Any]:
    """The trainer's config and, when the job needs Vault, its init container's instructions."""
    workload = workload_of(job, domain)
    config = trainer_config(job, domain, settings)
    body = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data = {mounts.CONFIG_FILE: json.dumps(body, indent=2, sort_keys=True)}
    vault = init_config(job, domain, settings, wrapped_job_key)
    if vault is not None:
        data[INIT_CONFIG_FILE] = init_config_json(vault)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(job, workload, workload.config_map, "config"),
        "immutable": False,
        "data": data,
    }
