"""Checkpoint directory layout, atomic publication and authenticated resumption.

    <checkpointDir>/step-000000040/   one complete checkpoint, every file sealed
    <checkpointDir>/latest            the name of the newest complete one

A checkpoint is written into a hidden staging directory, sealed and renamed into place;
`latest` is replaced atomically afterwards. A process killed at any moment therefore leaves
either the previous checkpoint or the new one as `latest`, never a partial one.

Every file of a checkpoint, its trainer state included, is sealed under the job's key
(deleting the key deletes the checkpoints). To resume, a checkpoint is opened whole into
memory before torch or DeepSpeed sees any of it, so they never unpickle anything that did
not authenticate. A checkpoint holding a symlink, a file that fails authentication (written
in clear, under another job's key, tampered with) or a state that does not match its name
is skipped with a warning for the next older one: what an earlier run planted is never
loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealtune_trainer import manifest, sealing
from sealtune_trainer.errors import OutputRefused
from sealtune_trainer.telemetry import log

LATEST = "latest"
STATE_FILE = "trainer_state.json"
KEEP = 2
_NAME = re.compile(r"step-([0-9]{9})")


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


def _step_of(name: str) -> int | None:
    match = _NAME.fullmatch(name)
    return int(match[1]) if match else None


def _named(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of whatever is named step-<9 digits> in `root`, oldest first."""
    try:
        with os.scandir(root) as entries:
            found = [(step, Path(entry.path)) for entry in entries
                     if (step := _step_of(entry.name)) is not None]
    except FileNotFoundError:
        return []
    return sorted(found)


def _latest_step(root: Path) -> int | None:
    """The step `latest` names; None when it is missing or is anything but a small regular
    file naming step-<9 digits> (a symlink, `../x`)."""
    path = root / LATEST
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    text = b""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(mode):
            with path.open("rb") as handle:
                text = handle.read(64)
    step = _step_of(text.decode("ascii", "replace").strip())
    if step is None:
        log.warning("checkpoint pointer %s ignored: not a regular file naming step-<9 digits>",
                    LATEST)
    return step


def _candidates(root: Path) -> list[tuple[int, Path]]:
    """The checkpoints to try, newest first: the one `latest` names and those older (all of
    them when `latest` is missing or unusable)."""
    newest = _latest_step(root)
    found = []
    for step, path in reversed(_named(root)):
        if newest is not None and step > newest:
            continue
        if not _is_real_dir(path):
            log.warning("checkpoint %s ignored: not a directory (a symlink?)", path.name)
            continue
        found.append((step, path))
    return found


class Rejected(Exception):
    """Why a checkpoint is not used; the message never quotes its content."""


@dataclass(frozen=True)
class Resumed:
    """An authenticated checkpoint: its step, its losses so far and its opened files."""

    step: int
    losses: list[float]
    files: Path


def _state(raw: bytes, step: int) -> list[float]:
    """The losses of an opened trainer state that belongs to `step`."""
    try:
        state = json.loads(raw)
    except ValueError:
        raise Rejected("its trainer state is not JSON") from None
    losses = state.get("losses") if isinstance(state, dict) else None
    if (not isinstance(losses, list) or state.get("step") != step or len(losses) != step
            or not all(isinstance(loss, int | float) for loss in losses)):
        raise Rejected("its trainer state does not match its name")
    return [float(loss) for loss in losses]


def _open(directory: Path, step: int, key: bytes, target: Path) -> Resumed:
    files, others = manifest.walk(directory)
    if others:
        raise Rejected("it holds a symlink or a special file")
    if STATE_FILE not in files:
        raise Rejected("it has no trainer state")
    losses: list[float] = []
    for rel in files:
        try:
            plain = sealing.open_sealed((directory / rel).read_bytes(), key)
        except sealing.SealError:
            raise Rejected("a file failed authentication (in clear, under another key or "
                           "tampered with)") from None
        if rel == STATE_FILE:
            losses = _state(plain, step)
            continue
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(plain)
    return Resumed(step, losses, target)


@dataclass(frozen=True)
class Store:
    """A run's checkpoint directory and the key that seals every file in it."""

    root: Path
    key: bytes

    def staging(self, step: int) -> Path:
        return self.root / f".staging-{name_of(step)}"

    def prepare(self, step: int) -> Path:
        """An empty hidden directory to write the checkpoint of `step` into."""
        path = self.staging(step)
        self.root.mkdir(parents=True, exist_ok=True)
        remove(path)
        path.mkdir()
        return path

    def publish(self, step: int, state: dict[str, Any]) -> Path:
        """Adds the trainer state to the staged checkpoint, seals every file, moves it into
        place, points `latest` at it and keeps only the KEEP newest up to it."""
        staged, final = self.staging(step), self.root / name_of(step)
        (staged / STATE_FILE).write_bytes(json.dumps(state).encode())
        self._seal(staged)
        remove(final)
        os.replace(staged, final)
        fsync_dir(self.root)
        write_atomic(self.root / LATEST, name_of(step).encode())
        # Whatever else bears a checkpoint's name goes too, planted symlinks included.
        named = _named(self.root)
        kept = [s for s, path in named if s <= step and _is_real_dir(path)][-KEEP:]
        for other, path in named:
            if other not in kept:
                with contextlib.suppress(OSError):  # a prune can wait for the next checkpoint
                    remove(path)
        return final

    def _seal(self, directory: Path) -> None:
        """Seals every file of a staged checkpoint in place, each fsynced."""
        try:
            files = manifest.regular_files(directory)
        except manifest.ManifestError as exc:
            raise OutputRefused(f"staged checkpoint: {exc}") from None
        for rel in files:
            path = directory / rel
            tmp = path.with_name(f".{path.name}.sealing")
            with path.open("rb") as src, tmp.open("xb") as dst:
                sealing.seal_stream(src, dst, self.key)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, path)

    @contextlib.contextmanager
    def opened_newest(self, scratch: Path) -> Iterator[Resumed | None]:
        """The newest checkpoint whose every file authenticates, opened into a private
        directory under `scratch` (memory-backed in a pod) and removed afterwards, so
        plaintext never reaches the volume; None when there is none."""
        target = Path(tempfile.mkdtemp(dir=scratch, prefix="checkpoint-"))
        try:
            yield self._open_newest(target)
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def _open_newest(self, target: Path) -> Resumed | None:
        for step, path in _candidates(self.root):
            try:
                return _open(path, step, self.key, target)
            except Rejected as exc:
                log.warning("checkpoint %s ignored: %s", path.name, exc)
            except OSError as exc:
                log.warning("checkpoint %s ignored: unreadable (%s)", path.name,
                            type(exc).__name__)
            shutil.rmtree(target)
            target.mkdir()
        return None
