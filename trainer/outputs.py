"""The run's outputs: metrics.json, the output manifest and the termination-message result.

The manifest is written last and lists every other file in the output directory, so its
digest (reported in the result) pins everything the operator will sign.

The output directory must not exist before the outputs are written: they go into a hidden
staging directory beside it, which is renamed into place whole. A directory already there
(an earlier run's, or planted) is refused, never written into, and so is a symlink on the
way to it that this process could have planted. A retried pod that crashed while writing
starts its staging directory over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sealtune_trainer import checkpoints, manifest
from sealtune_trainer.errors import OutputRefused

MANIFEST_NAME = "manifest.json"
METRICS_NAME = "metrics.json"
TERMINATION_LIMIT = 4096


def refuse_planted_symlinks(path: Path) -> None:
    """Refuses a symlink on `path` (itself included) in a directory this process can write:
    an earlier run under the same identity could have planted it. Symlinks where it cannot
    write (the image's /var/run -> /run, on a read-only root) are the platform's."""
    absolute = Path(os.path.abspath(path))
    for part in [*reversed(absolute.parents), absolute]:
        if part.is_symlink() and os.access(part.parent, os.W_OK):
            raise OutputRefused(f"{part} is a symlink that an earlier run could have planted")


def check_absent(directory: Path) -> None:
    """Refuses an output directory that exists already (as anything, a symlink included)."""
    refuse_planted_symlinks(directory)
    if os.path.lexists(directory):
        raise OutputRefused(f"the output directory {directory} already exists: an earlier "
                            "run wrote there or something was planted; nothing is written "
                            "into it")


def staging_path(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.partial")


def prepare(directory: Path) -> Path:
    """An empty staging directory for the outputs that will become `directory`."""
    check_absent(directory)
    staging = staging_path(directory)
    refuse_planted_symlinks(staging)
    directory.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.remove(staging)  # what a pod that crashed while writing left
    staging.mkdir()
    return staging


def publish(staging: Path, directory: Path) -> None:
    """Moves the written outputs into place, refusing once more anything already there."""
    check_absent(directory)
    os.rename(staging, directory)
    checkpoints.fsync_dir(directory.parent)


def write_metrics(directory: Path, metrics: dict[str, Any]) -> None:
    checkpoints.write_atomic(directory / METRICS_NAME,
                             json.dumps(metrics, indent=2, sort_keys=True).encode())


def write_manifest(directory: Path, **extra: Any) -> tuple[str, list[dict[str, Any]]]:
    """Lists every file under `directory` (except the manifest) in the manifest; a symlink
    or a special file is refused, never followed. Returns its digest and the files the
    operator signs: those listed, and the manifest itself."""
    try:
        files = [rel for rel in manifest.regular_files(directory) if rel != MANIFEST_NAME]
    except manifest.ManifestError as exc:
        raise OutputRefused(f"outputs: {exc}") from None
    document = manifest.build(directory, files, **extra)
    digest = manifest.write(directory / MANIFEST_NAME, document)
    size, sha256 = manifest.hash_file(directory / MANIFEST_NAME)
    signed = [*document["files"], {"path": MANIFEST_NAME, "size": size, "sha256": sha256}]
    return digest, sorted(signed, key=lambda f: f["path"])


def verify_outputs(directory: Path) -> list[str]:
    """Every difference between the output directory and its manifest."""
    return manifest.verify(directory, manifest.load(directory / MANIFEST_NAME),
                           exclude=[MANIFEST_NAME])


def _encode(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":"), sort_keys=True).encode()


def termination_message(result: dict[str, Any]) -> bytes:
    """The result as compact JSON of at most 4 KB (Kubernetes' termination-message limit):
    gate details shrink to name and outcome, then the message is cut, if needed."""
    encoded = _encode(result)
    if len(encoded) <= TERMINATION_LIMIT:
        return encoded
    smaller = dict(result)
    if "gates" in smaller:
        smaller["gates"] = [{"name": g["name"], "passed": g["passed"]} for g in result["gates"]]
        encoded = _encode(smaller)
    if len(encoded) > TERMINATION_LIMIT and "message" in smaller:
        excess = len(encoded) - TERMINATION_LIMIT
        smaller["message"] = str(smaller["message"])[: max(0, len(smaller["message"])
                                                       - excess - 3)] + "..."
        encoded = _encode(smaller)
    if len(encoded) > TERMINATION_LIMIT:
        encoded = _encode({key: smaller[key] for key in ("ok", "reason") if key in smaller})
    return encoded


def write_termination_message(path: Path, result: dict[str, Any]) -> None:
    path.write_bytes(termination_message(result))
