"""Fixtures for the trainer tier: a tiny random Llama and a locally trained tokenizer (built
once per session) and a config factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import MakeConfig, merge

from sealtune_trainer import tiny
from sealtune_trainer.contract import TrainerConfig


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(model dir, its manifest digest): weights and tokenizer side by side. The tokenizer is
    trained on a built-in corpus, not on any test's data, so no test marker can hide in its
    vocabulary."""
    root = tmp_path_factory.mktemp("tiny")
    return root, tiny.make_base_model(root, shape={})


@pytest.fixture
def make_config(tiny_model: tuple[Path, str], tmp_path: Path) -> MakeConfig:
    model_dir, model_digest = tiny_model

    def make(data_dir: Path, digest: str, data_format: str = "text",
             **overrides: Any) -> TrainerConfig:
        base = {
            "data": {"path": str(data_dir), "format": data_format, "manifestDigest": digest},
            "model": {"path": str(model_dir), "manifestDigest": model_digest},
            "method": {"type": "lora", "r": 8, "alpha": 16},
            "training": {"maxSteps": 40, "learningRate": 1e-2, "batchSize": 4,
                         "maxSeqLength": 64, "logEvery": 10, "lrScheduler": "constant"},
            "evaluation": {"holdoutFraction": 0.2},
            "output": {"dir": str(tmp_path / "out"),
                       "terminationMessagePath": str(tmp_path / "termination-log")},
            "metricsPort": 0,
        }
        return TrainerConfig.model_validate(merge(base, overrides))

    return make
