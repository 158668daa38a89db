"""`python -m sealtune_trainer.release`: the release pod's copy of one artifact's files.

The operator runs it, in the domain's workload namespace, once it has decided that a release
request is allowed (sealtune/releases.py). It copies exactly the files the artifact's signature
lists from the run's directory (mounted read-only) to <target>/<directory>, rehashing every byte
on the way, and writes the signature bundle beside them, so that `model_signing verify key`
accepts the directory as it lands. Nothing is followed: a symlink, a special file or a file that
differs from its signed digest refuses the whole release, and a refused or crashed copy leaves
nothing at the final path (it is written under a hidden staging name and renamed at the end).

Its config is a JSON file: {"directory", "files": [{"path", "sha256", "size"}], "bundle",
"signatureFile"}. Exit codes: 0 released (or found already released, verified), 1 failed,
5 refused (a file differs, is missing or is not a regular file; or the target is occupied by
something else). The outcome goes to the termination-message path as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from sealtune_trainer import checkpoints, manifest, outputs
from sealtune_trainer.contract import DEFAULT_TERMINATION_MESSAGE_PATH
from sealtune_trainer.errors import EXIT_FAILED, OutputRefused, TrainerError

_BLOCK = 1024 * 1024


def _open_regular(path: Path) -> int:
    """A read descriptor for a regular file at `path`, never through a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise OutputRefused(f"{path.name}: cannot open it without following links "
                            f"({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputRefused(f"{path.name}: not a regular file")
    return fd


def copy_checked(source: Path, target: Path, sha256: str, size: int) -> int:
    """Copies one file, refusing it unless its bytes match the signed digest and size."""
    digest, copied = hashlib.sha256(), 0
    with os.fdopen(_open_regular(source), "rb") as reader, open(target, "xb") as writer:
        while block := reader.read(_BLOCK):
            digest.update(block)
            copied += len(block)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    if copied != size or digest.hexdigest() != sha256:
        raise OutputRefused(f"{source.name} differs from the signed digest; nothing released")
    return copied


def matches(directory: Path, files: list[dict[str, Any]], signature: str) -> bool:
    """Whether an earlier release already left exactly these files (and the bundle) there."""
    document = {"version": manifest.VERSION, "files": files}
    return not manifest.verify(directory, document, exclude=[signature])


def release(config: dict[str, Any], source: Path, target: Path) -> dict[str, Any]:
    directory = target / manifest.check_relative_path(str(config["directory"]))
    files = list(config["files"])
    signature = manifest.check_relative_path(str(config["signatureFile"]))
    outputs.refuse_planted_symlinks(directory)
    if os.path.lexists(directory):
        if directory.is_dir() and not directory.is_symlink() and matches(directory, files, signature):
            return {"ok": True, "directory": config["directory"], "files": len(files),
                    "bytes": sum(int(f["size"]) for f in files), "found": True}
        raise OutputRefused(f"{config['directory']} exists and is not this release")
    staging = outputs.staging_path(directory)
    outputs.refuse_planted_symlinks(staging)
    directory.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.remove(staging)
    staging.mkdir()
    try:
        total = 0
        for entry in files:
            relative = manifest.check_relative_path(str(entry["path"]))
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            total += copy_checked(source / relative, staging / relative, str(entry["sha256"]),
                                  int(entry["size"]))
        checkpoints.write_atomic(staging / signature, str(config["bundle"]).encode())
        outputs.publish(staging, directory)
    except BaseException:
        checkpoints.remove(staging)
        raise
    return {"ok": True, "directory": config["directory"], "files": len(files), "bytes": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sealtune_trainer.release")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--termination-message-path", type=Path,
                        default=Path(DEFAULT_TERMINATION_MESSAGE_PATH))
    args = parser.parse_args(argv)
    try:
        result = release(json.loads(args.config.read_text()), args.source, args.target)
        code = 0
    except TrainerError as exc:
        result, code = {"ok": False, "reason": exc.reason, "message": exc.message}, exc.exit_code
    except (OSError, ValueError, KeyError, TypeError) as exc:
        result = {"ok": False, "reason": "ReleaseFailed", "message": f"{type(exc).__name__}: {exc}"}
        code = EXIT_FAILED
    print(json.dumps(result, sort_keys=True), flush=True)
    with contextlib.suppress(OSError):  # the outcome is in the log too
        outputs.write_termination_message(args.termination_message_path, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
