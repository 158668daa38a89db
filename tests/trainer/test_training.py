"""The trainer on a tiny random Llama, on CPU, in this process: real torch, transformers, peft
and Opacus, nothing mocked."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pytest
from trainer_helpers import MakeConfig, train_in_process, write_dataset

from sealtune_trainer import canaries, outputs, tiny
from sealtune_trainer.contract import TrainerConfig
from sealtune_trainer.errors import ConfigRefused

pytestmark = pytest.mark.trainer


def _losses(config: TrainerConfig) -> list[float]:
    metrics = json.loads((Path(config.output.dir) / outputs.METRICS_NAME).read_text())
    return list(metrics["lossPerStep"])


@pytest.mark.parametrize("data_format", ["text", "prompt_completion", "chat"])
def test_each_format_trains_and_the_loss_falls(data_format: str, tmp_path: Path,
                                               make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records(data_format, 64))
    config = make_config(data_dir, digest, data_format, training={"maxSteps": 80})
    result = train_in_process(config)
    losses = _losses(config)
    assert result["ok"] and result["steps"] == len(losses) == 80
    # A random 64-wide model starts near ln(vocab) = 6 nats per token.
    assert mean(losses[-5:]) < mean(losses[:5]) - 0.5, losses
    assert result["dataDigest"] == digest and result["weightsChanged"]
    assert result["gatesPassed"]
    names = {p.name for p in Path(config.output.dir).iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
            "metrics.json", "manifest.json"} <= names


def test_output_manifest_verifies_and_detects_one_changed_byte(
        tmp_path: Path, make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 32))
    config = make_config(data_dir, digest, training={"maxSteps": 3})
    result = train_in_process(config)
    out = Path(config.output.dir)
    assert outputs.verify_outputs(out) == []
    from sealtune_trainer import manifest

    assert manifest.digest_of(manifest.load(out / "manifest.json")) == result["manifestDigest"]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [f["path"] for f in result["files"]] == on_disk, "the signed list is every output file"
    for entry in result["files"]:
        assert manifest.hash_file(out / entry["path"]) == (entry["size"], entry["sha256"])
    adapter = out / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[len(data) // 2] ^= 0x01
    adapter.write_bytes(bytes(data))
    assert outputs.verify_outputs(out) == [
        "adapter_model.safetensors: sha256 differs from the manifest"]


def test_termination_message_is_small_json(tmp_path: Path, make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 32))
    config = make_config(data_dir, digest, training={"maxSteps": 2},
                         evaluation={"gates": {"maxEvalLoss": 100, "maxMiaAuc": 1.0}})
    result = train_in_process(config)
    encoded = outputs.termination_message(result)
    assert len(encoded) <= outputs.TERMINATION_LIMIT
    assert json.loads(encoded)["gatesPassed"] is True
    assert json.loads(encoded)["files"] == result["files"], "a small adapter's file list fits"
    bloated = {**result, "gates": result["gates"] * 40, "message": "m" * 5000}
    assert len(outputs.termination_message(bloated)) <= outputs.TERMINATION_LIMIT


def _exposures_of(model: object, config: TrainerConfig,
                  planted: list[canaries.Canary]) -> list[float]:
    import torch

    from sealtune_trainer import evaluation, modeling, tokenization

    tokenizer = modeling.load_tokenizer(config)
    spec = config.privacy.canaries
    assert spec is not None

    def encode(text: str) -> tokenization.Example:
        return tokenization.encode(tokenizer, canaries.as_record(text, spec.format, "text"), 64)

    return evaluation.canary_exposures(model, planted, encode=encode,
                                       pad_id=tokenizer.pad_token_id,
                                       device=torch.device("cpu"), dtype=torch.float32)


def test_canary_exposure_separates_memorised_from_unseen(tmp_path: Path,
                                                         make_config: MakeConfig) -> None:
    from transformers import AutoModelForCausalLM

    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 48))
    canary_spec = {"count": 4, "repetitions": 12, "candidates": 256}
    seen = make_config(data_dir, digest, privacy={"canaries": canary_spec},
                       method={"type": "full"},
                       training={"maxSteps": 120, "learningRate": 3e-3, "batchSize": 8},
                       output={"dir": str(tmp_path / "seen")})
    seen_result = train_in_process(seen)
    seen_exposures = json.loads((tmp_path / "seen" / "metrics.json").read_text())[
        "canaryExposures"]

    unseen = make_config(data_dir, digest,
                         training={"maxSteps": 120, "learningRate": 3e-3, "batchSize": 8},
                         method={"type": "full"}, output={"dir": str(tmp_path / "unseen")})
    train_in_process(unseen)
    planted = canaries.make_canaries(seen.privacy.canaries, seen.training.seed)  # type: ignore[arg-type]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "unseen")
    unseen_exposures = _exposures_of(model, seen, planted)

    assert seen_result["canaryExposure"] == max(seen_exposures)
    assert mean(seen_exposures) > 6.0, seen_exposures  # log2(256) = 8 is the ceiling
    assert mean(unseen_exposures) < 3.0, unseen_exposures


def test_dp_sgd_reports_epsilon_within_budget(tmp_path: Path, make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 64))
    config = make_config(data_dir, digest,
                         privacy={"dp": {"targetEpsilon": 8.0, "delta": 1e-3}},
                         training={"maxSteps": 10, "batchSize": 2,
                                   "gradientAccumulation": 2},
                         evaluation={"gates": {"maxEpsilon": 8.0}})
    result = train_in_process(config)
    privacy = json.loads((Path(config.output.dir) / "metrics.json").read_text())["privacy"]
    assert 0 < result["epsilon"] <= 8.0 + 1e-6
    assert privacy["accountant"] == "rdp" and privacy["steps"] == 10
    assert privacy["noiseMultiplier"] > 0 and result["delta"] == 1e-3
    assert result["weightsChanged"] and result["gatesPassed"]


def test_full_fine_tuning_with_packing_and_checkpointing_loads_back(
        tmp_path: Path, make_config: MakeConfig) -> None:
    from transformers import AutoModelForCausalLM

    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("chat", 64))
    config = make_config(data_dir, digest, "chat", method={"type": "full"},
                         training={"maxSteps": 6, "packing": True,
                                   "gradientCheckpointing": True, "learningRate": 1e-3})
    result = train_in_process(config)
    assert result["ok"] and result["weightsChanged"]
    assert AutoModelForCausalLM.from_pretrained(config.output.dir) is not None


def test_qlora_is_refused_on_cpu(tmp_path: Path, make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 8))
    config = make_config(data_dir, digest, method={"type": "qlora"})
    with pytest.raises(ConfigRefused, match="QLoRA needs a CUDA GPU") as caught:
        train_in_process(config)
    assert caught.value.reason == "QloraNeedsGpu"
    assert not Path(config.output.dir).exists()


def test_runs_are_reproducible(tmp_path: Path, make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 32))
    first = make_config(data_dir, digest, training={"maxSteps": 5},
                        method={"type": "lora", "dropout": 0.1},
                        output={"dir": str(tmp_path / "a")})
    second = first.model_copy(update={"output": first.output.model_copy(
        update={"dir": str(tmp_path / "b")})})
    train_in_process(first)
    train_in_process(second)
    assert _losses(first) == _losses(second)
    assert ((tmp_path / "a" / "adapter_model.safetensors").read_bytes()
            == (tmp_path / "b" / "adapter_model.safetensors").read_bytes())
