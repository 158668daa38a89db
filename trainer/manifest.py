"""File manifests: the sha256 and size of every file in a data set or an output directory.

A manifest is a JSON document ``{"version": 1, "files": [{"path", "size", "sha256"}, ...],
...extra fields}``. Its digest is ``sha256:`` + the sha256 of its canonical bytes (keys
sorted, no whitespace, UTF-8), so the digest does not depend on how the file is indented.
Manifests are written in canonical form, so `sha256sum manifest.json` shows the same hex.
Paths are relative, use `/`, and may not contain `..` (model-signing's PR #647 lesson); an
empty manifest is refused (#661).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

VERSION = 1
_READ_BYTES = 1024 * 1024


class ManifestError(ValueError):
    """A manifest is malformed or lists a path it must not."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def check_relative_path(path: str) -> str:
    """Returns `path` if it is a plain relative path inside the manifest's root."""
    pure = PurePosixPath(path)
    if (not path or "\\" in path or pure.is_absolute()
            or any(part in ("..", ".", "") for part in path.split("/"))):
        raise ManifestError(f"manifest path {path!r} must be relative, without '.' or '..'")
    return path


def canonical_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def digest_of(document: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(document)).hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in blocks."""
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(_READ_BYTES):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def build(root: Path, relative_paths: Iterable[str], **extra: Any) -> dict[str, Any]:
    """A manifest of the given files under `root`, sorted by path."""
    entries = []
    for rel in sorted(set(relative_paths)):
        size, sha256 = hash_file(root / check_relative_path(rel))
        entries.append(FileEntry(rel, size, sha256).as_json())
    if not entries:
        raise ManifestError("refusing to build an empty manifest")
    return {"version": VERSION, "files": entries, **extra}


def entries_of(document: dict[str, Any]) -> list[FileEntry]:
    """The file entries of a parsed manifest, validated."""
    if document.get("version") != VERSION:
        raise ManifestError(f"unsupported manifest version {document.get('version')!r}")
    files = document.get("files")
    if not isinstance(files, list) or not files:
        raise ManifestError("manifest lists no files")
    entries: list[FileEntry] = []
    for item in files:
        if not (isinstance(item, dict) and set(item) == {"path", "size", "sha256"}
                and isinstance(item["path"], str) and isinstance(item["size"], int)
                and isinstance(item["sha256"], str) and len(item["sha256"]) == 64):
            raise ManifestError("malformed manifest entry")
        entries.append(FileEntry(check_relative_path(item["path"]), item["size"],
                                 item["sha256"]))
    if len({entry.path for entry in entries}) != len(entries):
        raise ManifestError("manifest lists a path twice")
    return entries


def load(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {path.name}: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ManifestError("a manifest must be a JSON object")
    entries_of(document)
    return document


def write(path: Path, document: dict[str, Any]) -> str:
    """Writes the manifest atomically in canonical form and returns its digest."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(canonical_bytes(document))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return digest_of(document)


def walk(root: Path) -> tuple[list[str], list[str]]:
    """(regular files, everything else but directories) under `root`, as sorted relative
    paths. Nothing is followed: a symlink (to a file or a directory), a FIFO or a device is
    listed in the second list, never read, so it cannot redirect a read or block one."""
    files: list[str] = []
    others: list[str] = []
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                else:
                    regular = entry.is_file(follow_symlinks=False)
                    (files if regular else others).append(path.relative_to(root).as_posix())
    return sorted(files), sorted(others)


def regular_files(root: Path) -> list[str]:
    """The files under `root`; refuses a tree holding a symlink or a special file."""
    files, others = walk(root)
    if others:
        raise ManifestError(f"{others[0]} is a symlink or a special file")
    return files


def verify(root: Path, document: dict[str, Any], *, exclude: Iterable[str] = ()) -> list[str]:
    """Every difference between `root` and the manifest: changed, missing and unlisted
    files (except `exclude`, e.g. the manifest itself), and any symlink or special file.
    An empty list means it verifies."""
    files, others = walk(root)
    present = set(files)
    problems: list[str] = []
    listed = set()
    for entry in entries_of(document):
        listed.add(entry.path)
        if entry.path not in present:
            problems.append(f"{entry.path}: missing")
            continue
        size, sha256 = hash_file(root / entry.path)
        if size != entry.size:
            problems.append(f"{entry.path}: size {size}, manifest says {entry.size}")
        elif sha256 != entry.sha256:
            problems.append(f"{entry.path}: sha256 differs from the manifest")
    skip = listed | set(exclude)
    problems += [f"{rel}: not in the manifest" for rel in files if rel not in skip]
    problems += [f"{rel}: a symlink or a special file" for rel in others]
    return problems
