"""The trainer as Kubernetes runs it: `python -m sealtune_trainer` in its own process (and
under torchrun), with exit codes, the termination message, kills and restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_helpers import (
    SUBPROCESS_ENV,
    MakeConfig,
    run_trainer,
    train_in_process,
    trainer_command,
    write_config,
    write_dataset,
)

from sealtune_trainer import checkpoints, dataset, sealing, tiny

pytestmark = pytest.mark.trainer


def test_digest_mismatch_is_refused_before_training(tmp_path: Path,
                                                    make_config: MakeConfig) -> None:
    data_dir, _ = write_dataset(tmp_path / "ds", tiny.make_records("text", 16))
    config = make_config(data_dir, "sha256:" + "0" * 64)
    started = time.monotonic()
    done = run_trainer(trainer_command(write_config(config, tmp_path / "config.json")))
    assert done.returncode == 3, done.stderr
    assert "DataDigestMismatch" in done.stderr and "expected sha256:000" in done.stderr
    assert "step " not in done.stderr
    assert not Path(config.output.dir).exists()
    message = json.loads(Path(config.output.termination_message_path).read_text())
    assert message["ok"] is False and message["reason"] == "DataDigestMismatch"
    # Refused before torch was even imported.
    assert time.monotonic() - started < 20


MARKER = "QUOKKA-PLAINTEXT-7731"
KEY = os.urandom(32)


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and needle in p.read_bytes()]


def test_encrypted_data_trains_without_plaintext_on_disk(tmp_path: Path,
                                                         make_config: MakeConfig) -> None:
    work = tmp_path / "work"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    assert dataset.main(["keygen", str(secrets / "data.key")]) == 0
    assert dataset.main(["keygen", str(secrets / "job.key")]) == 0
    data_dir, digest = write_dataset(
        work / "staging", tiny.make_records("chat", 48, marker=MARKER),
        key_file=secrets / "data.key")
    # The admin's plaintext staging copy is not part of what the trainer sees.
    for plain in (work / "staging" / "plain").iterdir():
        plain.unlink()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = make_config(data_dir, digest, "chat",
                         data={"encrypted": True, "keyFile": "data.key"},
                         secretsDir=str(secrets), training={"maxSteps": 6, "checkpointEvery": 3},
                         output={"checkpointDir": str(tmp_path / "ckpt"),
                                 "checkpointKeyFile": "job.key"})
    before = {p for p in Path("/dev/shm").iterdir()} if Path("/dev/shm").is_dir() else set()
    done = run_trainer(trainer_command(write_config(config, tmp_path / "config.json")),
                       env={"TMPDIR": str(scratch), "HOME": str(scratch),
                            "XDG_CACHE_HOME": str(scratch / "cache")})
    assert done.returncode == 0, done.stderr
    result = json.loads(Path(config.output.termination_message_path).read_text())
    assert result["ok"] and result["dataDigest"] == digest and result["steps"] == 6
    # Everything the run could have written: its outputs, checkpoints, temp and cache dirs.
    assert _files_containing(tmp_path, MARKER.encode()) == []
    new_shm = {p for p in Path("/dev/shm").iterdir()} - before if before else set()
    assert not [p for p in new_shm if p.is_file() and MARKER.encode() in p.read_bytes()]
    assert MARKER not in done.stderr + done.stdout


def test_killed_run_resumes_from_its_sealed_checkpoint(tmp_path: Path,
                                                       make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 64))
    total = 400
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "job.key").write_bytes(KEY)
    config = make_config(data_dir, digest,
                         training={"maxSteps": total, "checkpointEvery": 25, "logEvery": 50},
                         output={"checkpointDir": str(tmp_path / "ckpt"),
                                 "checkpointKeyFile": "job.key"},
                         secretsDir=str(tmp_path / "secrets"))
    argv = trainer_command(write_config(config, tmp_path / "config.json"))
    env = {**os.environ, **SUBPROCESS_ENV}
    latest = tmp_path / "ckpt" / checkpoints.LATEST
    with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as victim:
        deadline = time.monotonic() + 300
        while not latest.exists() and victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    store = checkpoints.Store(tmp_path / "ckpt", KEY)
    with store.opened_newest(tmp_path) as found:
        assert found is not None
        saved_at = found.step
    assert 0 < saved_at < total
    # Every file, the trainer state included, is sealed under the job's key.
    checkpoint = tmp_path / "ckpt" / checkpoints.name_of(saved_at)
    sealed = [p for p in checkpoint.rglob("*") if p.is_file()]
    assert checkpoints.STATE_FILE in {p.name for p in sealed} and len(sealed) > 1
    for path in sealed:
        assert sealing.open_sealed(path.read_bytes(), sealing.parse_key(KEY))
        with pytest.raises(sealing.SealError):
            sealing.open_sealed(path.read_bytes(), bytes(32))

    done = run_trainer(argv)
    assert done.returncode == 0, done.stderr
    assert f"resuming from checkpoint at step {saved_at}" in done.stderr
    result = json.loads(Path(config.output.termination_message_path).read_text())
    assert result["steps"] == total and result["resumedFromStep"] >= saved_at
    resumed = json.loads((Path(config.output.dir) / "metrics.json").read_text())["lossPerStep"]
    assert len(resumed) == total

    # The same run without the interruption ends with the same losses.
    straight = make_config(data_dir, digest, training={"maxSteps": total},
                           output={"dir": str(tmp_path / "straight")})
    train_in_process(straight)
    uninterrupted = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert resumed == pytest.approx(uninterrupted["lossPerStep"], rel=1e-4)


def test_two_process_torchrun_with_zero2(tmp_path: Path, make_config: MakeConfig) -> None:
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("prompt_completion", 48))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "job.key").write_bytes(KEY)
    config = make_config(data_dir, digest, "prompt_completion",
                         deepspeed={"zeroStage": 2},
                         training={"maxSteps": 6, "batchSize": 2, "gradientAccumulation": 2,
                                   "checkpointEvery": 3},
                         output={"checkpointDir": str(tmp_path / "ckpt"),
                                 "checkpointKeyFile": "job.key"},
                         secretsDir=str(tmp_path / "secrets"))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", "2", "-m", "sealtune_trainer", "--config",
            str(write_config(config, tmp_path / "config.json"))]
    done = run_trainer(argv, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(Path(config.output.termination_message_path).read_text())
    assert result["ok"] and result["steps"] == 6 and result["weightsChanged"]
    assert result["manifestDigest"].startswith("sha256:")
    metrics = json.loads((Path(config.output.dir) / "metrics.json").read_text())
    assert metrics["training"]["worldSize"] == 2
    assert metrics["training"]["deepspeedZeroStage"] == 2
    assert metrics["training"]["globalBatch"] == 8
    assert (tmp_path / "ckpt" / "step-000000006").is_dir()
