"""Checkpoint directory layout and atomic publication.

    <checkpointDir>/step-000040/     one complete checkpoint (written by the stepper)
    <checkpointDir>/latest           the name of the newest complete one

A checkpoint is written into a hidden staging directory and renamed into place; `latest` is
replaced atomically afterwards. A process killed at any moment therefore leaves either the
previous checkpoint or the new one as `latest`, never a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

LATEST = "latest"
STATE_FILE = "trainer_state.json"
KEEP = 2


def name_of(step: int) -> str:
    return f"step-{step:09d}"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def staging_path(root: Path, step: int) -> Path:
    return root / f".staging-{name_of(step)}"


def prepare_staging(root: Path, step: int) -> Path:
    """An empty hidden directory to write the checkpoint of `step` into."""
    path = staging_path(root, step)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def publish(root: Path, step: int, state: dict[str, Any]) -> Path:
    """Moves the staged checkpoint into place, points `latest` at it, prunes old ones."""
    staged, final = staging_path(root, step), root / name_of(step)
    write_atomic(staged / STATE_FILE, json.dumps(state).encode())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staged, final)
    fsync_dir(root)
    write_atomic(root / LATEST, name_of(step).encode())
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint and its trainer state, if any."""
    if root is None or not (root / LATEST).is_file():
        return None
    path = root / (root / LATEST).read_text().strip()
    state_file = path / STATE_FILE
    if not state_file.is_file():
        return None
    return path, json.loads(state_file.read_text())
