"""Helpers for the trainer tier: data sets in every format, configs, and ways to run the
trainer in this process or as a real subprocess. (A plain module, not a package: tests/trainer
must not become an importable `trainer` that could shadow the repo's trainer/ directory.)"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sealtune_trainer import dataset
from sealtune_trainer.contract import TrainerConfig

# Trainer subprocesses share two cores with other builds: one thread each avoids OpenMP
# threads spinning against each other, and the DeepSpeed ops compiled once are reused.
SUBPROCESS_ENV = {
    "OMP_NUM_THREADS": "1",
    "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/sealtune/torch-extensions")),
    "PYTHONUNBUFFERED": "1",
}


def _digest_of_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert dataset.main(argv) == 0
    return out.getvalue().strip()


def write_dataset(root: Path, records: list[dict[str, Any]], *, key_file: Path | None = None,
                  files: int = 2) -> tuple[Path, str]:
    """Writes `records` as JSONL over `files` files (sealed when a key is given) with a
    manifest; returns (data dir, manifest digest)."""
    plain = root / ("plain" if key_file else "data")
    plain.mkdir(parents=True)
    for index in range(files):
        part = records[index::files]
        (plain / f"part-{index}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    if key_file is None:
        return plain, _digest_of_cli(["manifest", str(plain)])
    sealed = root / "data"
    return sealed, _digest_of_cli(["encrypt", "--key", str(key_file), str(plain), str(sealed)])


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        # A method is replaced whole: its fields depend on its type.
        mergeable = key != "method" and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if mergeable and isinstance(value, dict) else value
    return merged


MakeConfig = Callable[..., TrainerConfig]


def train_in_process(config: TrainerConfig) -> dict[str, Any]:
    """The trainer's real code path minus the process boundary (torch is already loaded):
    the same checks of the inputs and the output directory first."""
    import torch

    from sealtune_trainer.__main__ import verify_before_import
    from sealtune_trainer.distributed import Topology
    from sealtune_trainer.run import Trainer
    from sealtune_trainer.telemetry import Metrics

    torch.set_num_threads(1)
    return Trainer(config, verify_before_import(config), Metrics(), Topology()).run()


def write_config(config: TrainerConfig, path: Path) -> Path:
    path.write_text(config.to_json())
    return path


def trainer_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "sealtune_trainer", "--config", str(config_path)]


def run_trainer(argv: list[str], *, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **SUBPROCESS_ENV, **(env or {})}, check=False)
