"""The run's outputs: metrics.json, the output manifest and the termination-message result.

The manifest is written last and lists every other file in the output directory, so its
digest (reported in the result) pins everything the operator will sign.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sealtune_trainer import checkpoints, manifest

MANIFEST_NAME = "manifest.json"
METRICS_NAME = "metrics.json"
TERMINATION_LIMIT = 4096


def write_metrics(directory: Path, metrics: dict[str, Any]) -> None:
    checkpoints.write_atomic(directory / METRICS_NAME,
                             json.dumps(metrics, indent=2, sort_keys=True).encode())


def write_manifest(directory: Path, **extra: Any) -> tuple[str, list[dict[str, Any]]]:
    """Lists every file under `directory` (except the manifest) in the manifest. Returns its
    digest and the files the operator signs: those listed, and the manifest itself."""
    files = [p.relative_to(directory).as_posix() for p in directory.rglob("*")
             if p.is_file() and p.name != MANIFEST_NAME]
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
