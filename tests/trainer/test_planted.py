"""The attacker's view: a compromised earlier run (same claim, same identity, not this job's
key) planted something where this run reads or writes. Nothing planted is loaded, followed,
unpickled or signed: a tampered base model or an occupied output directory is refused before
torch is imported, a planted checkpoint is skipped for one that authenticates."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import MakeConfig, run_trainer, train_in_process, write_config, write_dataset

from sealtune_trainer import checkpoints, inputs, manifest, outputs, sealing, tiny
from sealtune_trainer.errors import EXIT_MODEL_REJECTED, EXIT_OUTPUT_REFUSED, OutputRefused
from sealtune_trainer.steppers import TORCH_STATE

pytestmark = pytest.mark.trainer

KEY = os.urandom(32)
OTHER_KEY = os.urandom(32)
HEAVY = ("torch", "transformers", "peft", "deepspeed", "opacus")
# Runs the real entry point in a fresh interpreter and reports its exit code and which heavy
# modules were imported by the time it returned.
PROBE = ("import json, sys; from sealtune_trainer.__main__ import main; "
         "code = main(sys.argv[1:]); "
         f"print(json.dumps({{'code': code, 'heavy': sorted(set({HEAVY!r}) & set(sys.modules))}}))")


def _run_entry(config_path: Path) -> dict[str, Any]:
    done = run_trainer([sys.executable, "-c", PROBE, "--config", str(config_path)], timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _reason(termination: str) -> str:
    return str(json.loads(Path(termination).read_text())["reason"])


# --- the base model -----------------------------------------------------------------------

def _flip_a_byte(model: Path, _: Path) -> None:
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))


def _add_a_file(model: Path, _: Path) -> None:
    (model / "modeling_evil.py").write_text("import os\n")


def _symlink_to_the_same_bytes(model: Path, elsewhere: Path) -> None:
    # The target hashes as listed: only the link itself gives it away.
    elsewhere.mkdir()
    moved = elsewhere / "tokenizer.json"
    shutil.move(model / "tokenizer.json", moved)
    (model / "tokenizer.json").symlink_to(moved)


def _symlink_a_directory(model: Path, elsewhere: Path) -> None:
    elsewhere.mkdir()
    (model / "extra").symlink_to(elsewhere, target_is_directory=True)


def _rewrite_the_manifest(model: Path, elsewhere: Path) -> None:
    # A consistent manifest for changed weights: its digest is not the one the job pinned.
    _flip_a_byte(model, elsewhere)
    files = [rel for rel in manifest.regular_files(model) if rel != "manifest.json"]
    manifest.write(model / "manifest.json", manifest.build(model, files))


def _refused_before_import(tmp_path: Path, make_config: MakeConfig, code: int, reason: str,
                           **changes: Any) -> Any:
    """Runs the trainer's entry on a small honest data set with ``changes`` to its config, and
    checks that it stopped with ``code`` and ``reason`` before importing anything heavy."""
    data_dir, digest = write_dataset(tmp_path / "ds", tiny.make_records("text", 16))
    config = make_config(data_dir, digest, **changes)
    outcome = _run_entry(write_config(config, tmp_path / "config.json"))
    assert outcome == {"code": code, "heavy": []}
    assert _reason(config.output.termination_message_path) == reason
    return config


@pytest.mark.parametrize("tamper", [_flip_a_byte, _add_a_file, _symlink_to_the_same_bytes,
                                    _symlink_a_directory, _rewrite_the_manifest],
                         ids=lambda tamper: tamper.__name__.strip("_"))
def test_a_tampered_base_model_is_refused_before_torch_is_imported(
        tamper: Callable[[Path, Path], None], tmp_path: Path, tiny_model: tuple[Path, str],
        make_config: MakeConfig) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model[0], model)
    tamper(model, tmp_path / "elsewhere")
    config = _refused_before_import(tmp_path, make_config, EXIT_MODEL_REJECTED, "ModelRejected",
                                    model={"path": str(model)})
    assert not Path(config.output.dir).exists()


# --- the output directory -----------------------------------------------------------------

def _occupy(out: Path, _: Path) -> None:
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(b"planted")


def _link_it(out: Path, elsewhere: Path) -> None:
    elsewhere.mkdir()
    out.parent.mkdir(parents=True)
    out.symlink_to(elsewhere, target_is_directory=True)


def _link_a_dangling_name(out: Path, elsewhere: Path) -> None:
    out.parent.mkdir(parents=True)
    out.symlink_to(elsewhere / "not-yet")


def _link_its_parent(out: Path, elsewhere: Path) -> None:
    # The namespace's directory, shared by its jobs, swapped for a link.
    elsewhere.mkdir()
    out.parent.parent.mkdir(parents=True)
    out.parent.symlink_to(elsewhere, target_is_directory=True)


@pytest.mark.parametrize("plant", [_occupy, _link_it, _link_a_dangling_name, _link_its_parent],
                         ids=lambda plant: plant.__name__.strip("_"))
def test_an_occupied_or_linked_output_directory_is_refused_before_training(
        plant: Callable[[Path, Path], None], tmp_path: Path, make_config: MakeConfig) -> None:
    out = tmp_path / "claim" / "team-a" / "run"
    plant(out, tmp_path / "elsewhere")
    _refused_before_import(tmp_path, make_config, EXIT_OUTPUT_REFUSED, "OutputRefused",
                           output={"dir": str(out)})
    elsewhere = tmp_path / "elsewhere"
    assert not elsewhere.exists() or list(elsewhere.iterdir()) == [], "nothing went through"
    if plant is _occupy:
        assert [p.name for p in out.iterdir()] == ["adapter_model.safetensors"]


def test_outputs_appearing_while_training_are_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "team-a" / "run"
    staging = outputs.prepare(out)
    (staging / "adapter_model.safetensors").write_bytes(b"honest")
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"planted")
    with pytest.raises(OutputRefused, match="already exists"):
        outputs.publish(staging, out)
    assert (out / "adapter_model.safetensors").read_bytes() == b"planted"


def test_a_symlink_among_the_outputs_is_refused_not_listed(tmp_path: Path) -> None:
    staging = outputs.prepare(tmp_path / "run")
    (staging / "adapter_model.safetensors").write_bytes(b"honest")
    (staging / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(OutputRefused, match="passwd is a symlink"):
        outputs.write_manifest(staging)


def test_a_retried_pod_starts_the_staging_directory_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    left = outputs.prepare(out)
    (left / "half-written.safetensors").write_bytes(b"x")
    staging = outputs.prepare(out)
    assert list(staging.iterdir()) == []
    (staging / "adapter_model.safetensors").write_bytes(b"honest")
    outputs.write_manifest(staging)
    outputs.publish(staging, out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_model.safetensors", "manifest.json"]
    assert not staging.exists() and outputs.verify_outputs(out) == []


# --- checkpoints --------------------------------------------------------------------------

class _Payload:
    """Unpickling it creates a directory: proof that something planted was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _plant(directory: Path, step: int, files: dict[str, bytes], key: bytes | None) -> None:
    directory.mkdir(parents=True)
    state = json.dumps({"step": step, "losses": [1.0] * step}).encode()
    for name, data in {**files, checkpoints.STATE_FILE: state}.items():
        (directory / name).write_bytes(data if key is None else sealing.seal_bytes(data, key))


def _honest(store: checkpoints.Store, step: int) -> None:
    staged = store.prepare(step)
    (staged / TORCH_STATE).write_bytes(b"honest weights")
    store.publish(step, {"step": step, "losses": [2.0] * step})


def _in_clear(root: Path, evil: bytes) -> None:
    _plant(root / checkpoints.name_of(6), 6, {TORCH_STATE: evil}, None)


def _under_another_key(root: Path, evil: bytes) -> None:
    _plant(root / checkpoints.name_of(6), 6, {TORCH_STATE: evil}, OTHER_KEY)


def _one_file_in_clear(root: Path, evil: bytes) -> None:
    # An authentic checkpoint whose weights were swapped for a file in clear.
    shutil.copytree(root / checkpoints.name_of(3), root / checkpoints.name_of(6))
    (root / checkpoints.name_of(6) / TORCH_STATE).write_bytes(evil)


def _renamed(root: Path, _: bytes) -> None:
    # The honest step 3, authentic, passed off as step 6.
    shutil.copytree(root / checkpoints.name_of(3), root / checkpoints.name_of(6))


def _with_a_symlink(root: Path, _: bytes) -> None:
    shutil.copytree(root / checkpoints.name_of(3), root / checkpoints.name_of(6))
    (root / checkpoints.name_of(6) / "extra").symlink_to("/etc/passwd")


def _linked_directory(root: Path, evil: bytes) -> None:
    _plant(root.parent / "elsewhere", 6, {TORCH_STATE: evil}, None)
    (root / checkpoints.name_of(6)).symlink_to(root.parent / "elsewhere")


def _latest_outside(root: Path, evil: bytes) -> None:
    _plant(root.parent / "x", 6, {TORCH_STATE: evil}, None)
    (root / checkpoints.LATEST).write_text("../x")


def _latest_a_symlink(root: Path, evil: bytes) -> None:
    _plant(root / checkpoints.name_of(6), 6, {TORCH_STATE: evil}, None)
    (root.parent / "pointer").write_text(checkpoints.name_of(6))
    (root / checkpoints.LATEST).unlink()
    (root / checkpoints.LATEST).symlink_to(root.parent / "pointer")


PLANTS = [_in_clear, _under_another_key, _one_file_in_clear, _renamed, _with_a_symlink,
          _linked_directory, _latest_outside, _latest_a_symlink]


def _point_latest_at_6(root: Path) -> None:
    # What a planter would do; the plants that write `latest` themselves overwrite it.
    (root / checkpoints.LATEST).write_text(checkpoints.name_of(6))


@pytest.mark.parametrize("plant", PLANTS, ids=lambda plant: plant.__name__.strip("_"))
def test_a_planted_checkpoint_is_skipped_for_the_newest_that_authenticates(
        plant: Callable[[Path, bytes], None], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    store = checkpoints.Store(tmp_path / "ckpt", KEY)
    _honest(store, 3)
    _point_latest_at_6(store.root)
    plant(store.root, b"QUOKKA-PLANTED")
    with store.opened_newest(tmp_path) as resumed:
        assert resumed is not None
        assert (resumed.step, resumed.losses) == (3, [2.0] * 3)
        assert (resumed.files / TORCH_STATE).read_bytes() == b"honest weights"
        assert sorted(p.name for p in resumed.files.iterdir()) == [TORCH_STATE]
    assert "ignored" in caplog.text and "QUOKKA" not in caplog.text


@pytest.mark.parametrize("plant", [_in_clear, _under_another_key, _linked_directory,
                                   _latest_outside], ids=lambda plant: plant.__name__.strip("_"))
def test_with_only_planted_checkpoints_nothing_is_resumed(
        plant: Callable[[Path, bytes], None], tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    root.mkdir()
    _point_latest_at_6(root)
    plant(root, b"QUOKKA-PLANTED")
    with checkpoints.Store(root, KEY).opened_newest(tmp_path) as resumed:
        assert resumed is None


def _sealed_checkpoint_config(make_config: MakeConfig, tmp_path: Path, steps: int,
                              out: str) -> Any:
    data_dir, digest = write_dataset(tmp_path / f"ds-{out}", tiny.make_records("text", 32))
    return make_config(data_dir, digest,
                       training={"maxSteps": steps, "checkpointEvery": 3},
                       output={"dir": str(tmp_path / out), "checkpointDir": str(tmp_path / "ckpt"),
                               "checkpointKeyFile": str(tmp_path / "job.key")})


@pytest.mark.parametrize("key", [None, OTHER_KEY], ids=["in-clear", "another-key"])
def test_a_planted_pickle_is_never_unpickled_and_the_run_starts_at_step_0(
        key: bytes | None, tmp_path: Path, make_config: MakeConfig) -> None:
    (tmp_path / "job.key").write_bytes(KEY)
    marker = tmp_path / "unpickled"
    root = tmp_path / "ckpt"
    _plant(root / checkpoints.name_of(3), 3, {TORCH_STATE: pickle.dumps(_Payload(marker))}, key)
    (root / checkpoints.LATEST).write_text(checkpoints.name_of(3))
    config = _sealed_checkpoint_config(make_config, tmp_path, 4, "out")
    result = train_in_process(config)
    assert not marker.exists()
    assert result["resumedFromStep"] == 0 and result["steps"] == 4
    listed = {entry["path"] for entry in result["files"]}
    assert not listed & {TORCH_STATE, checkpoints.STATE_FILE}
    assert outputs.verify_outputs(Path(config.output.dir)) == []


def test_a_tampered_newer_checkpoint_falls_back_to_the_older_honest_one(
        tmp_path: Path, make_config: MakeConfig) -> None:
    (tmp_path / "job.key").write_bytes(KEY)
    marker = tmp_path / "unpickled"
    first = train_in_process(_sealed_checkpoint_config(make_config, tmp_path, 3, "first"))
    assert first["steps"] == 3
    root = tmp_path / "ckpt"
    _plant(root / checkpoints.name_of(5), 5, {TORCH_STATE: pickle.dumps(_Payload(marker))}, None)
    (root / checkpoints.LATEST).write_text(checkpoints.name_of(5))
    result = train_in_process(_sealed_checkpoint_config(make_config, tmp_path, 6, "second"))
    assert not marker.exists()
    assert result["resumedFromStep"] == 3 and result["steps"] == 6


def test_a_linked_checkpoint_directory_is_refused(tmp_path: Path, make_config: MakeConfig) -> None:
    (tmp_path / "job.key").write_bytes(KEY)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "ckpt").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    config = _sealed_checkpoint_config(make_config, tmp_path, 3, "out")
    with pytest.raises(OutputRefused, match="ckpt is a symlink"):
        inputs.checkpoint_store(config)
