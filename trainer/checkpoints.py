"""Checkpoint directory layout and atomic publication.

    <checkpointDir>/step-000040/     one complete checkpoint (written by the stepper)
    <checkpointDir>/latest           the name of the newest complete one

A checkpoint is written into a hidden staging directory and renamed into place; `latest` is
replaced atomically afterwards. A process killed at any moment therefore leaves either the
previous checkpoint or the new one as `latest`, never a partial one.

With a key, every file of a checkpoint (but its small trainer state) is sealed before it is
published, and opened into memory to resume: deleting the key deletes the checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sealtune_trainer import sealing

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
    # A leftover (or planted) temporary file, symlink included, is removed, never written
    # through: O_EXCL | O_NOFOLLOW create a new file or fail.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def remove(path: Path) -> None:
    """Removes whatever is at `path` without following it (rmtree refuses a symlink)."""
    if _is_real_dir(path):
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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


def seal_tree(directory: Path, key: bytes) -> None:
    """Seals every file of a staged checkpoint in place, before it is published."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        tmp = path.with_name(f".{path.name}.sealing")
        with path.open("rb") as src, tmp.open("wb") as dst:
            sealing.seal_stream(src, dst, key)
        os.replace(tmp, path)


@contextlib.contextmanager
def opened_tree(directory: Path, key: bytes, scratch: Path) -> Iterator[Path]:
    """The checkpoint's files opened into a private directory under ``scratch`` (memory-backed
    in a pod) for loading, and removed afterwards: plaintext never reaches the volume."""
    target = Path(tempfile.mkdtemp(dir=scratch, prefix="checkpoint-"))
    try:
        for path in (p for p in directory.rglob("*") if p.is_file() and p.name != STATE_FILE):
            out = target / path.relative_to(directory)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(sealing.open_sealed(path.read_bytes(), key))
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def latest(root: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint and its trainer state, if any."""
    if root is None or not (root / LATEST).is_file():
        return None
    path = root / (root / LATEST).read_text().strip()
    state_file = path / STATE_FILE
    if not state_file.is_file():
        return None
    return path, json.loads(state_file.read_text())
