"""Reading a data set: verify the manifest's digest, then read every listed file exactly once,
check its size and sha256 against the manifest, decrypt it in memory if sealed, and parse its
JSONL records. The bytes that are hashed are the bytes that are parsed, so what was verified
is what is trained on; plaintext of sealed files never touches a disk.

Error messages name files and line numbers, never content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealtune_trainer import manifest, sealing
from sealtune_trainer.errors import DataRejected

PLAIN_SUFFIX = ".jsonl"
SEALED_SUFFIX = ".jsonl.sealed"
ENCRYPTION_NONE = "none"
CHAT_ROLES = frozenset({"system", "user", "assistant"})

Record = dict[str, Any]


@dataclass(frozen=True)
class DataSet:
    records: list[Record]
    manifest_digest: str
    files: int
    bytes_read: int


def data_files(root: Path) -> list[str]:
    """Relative paths of the data files under `root` (plain or sealed), sorted."""
    return sorted(
        path.relative_to(root).as_posix() for path in root.rglob("*")
        if path.is_file() and path.name.endswith((PLAIN_SUFFIX, SEALED_SUFFIX))
    )


def verified_contents(root: Path, document: dict[str, Any], key: bytes | None,
                      *, manifest_name: str) -> Iterator[tuple[str, bytes]]:
    """(path, plaintext) of every listed file, each checked against the manifest as read."""
    try:
        entries = manifest.entries_of(document)
    except manifest.ManifestError as exc:
        raise DataRejected(str(exc), reason="ManifestInvalid") from None
    listed = {entry.path for entry in entries}
    unlisted = [rel for rel in data_files(root) if rel not in listed and rel != manifest_name]
    if unlisted:
        raise DataRejected(f"{len(unlisted)} data file(s) not in the manifest, e.g. "
                           f"{unlisted[0]}", reason="DataUnlisted")
    sealed = document.get("encryption", ENCRYPTION_NONE) != ENCRYPTION_NONE
    for entry in entries:
        try:
            raw = (root / entry.path).read_bytes()
        except OSError as exc:
            raise DataRejected(f"{entry.path}: cannot read ({type(exc).__name__})",
                               reason="DataMissing") from None
        if len(raw) != entry.size or hashlib.sha256(raw).hexdigest() != entry.sha256:
            raise DataRejected(f"{entry.path}: content differs from the manifest",
                               reason="DataDigestMismatch")
        if not sealed:
            yield entry.path, raw
            continue
        if key is None:
            raise DataRejected("the data set is sealed but no key was given",
                               reason="DataKeyMissing")
        try:
            yield entry.path, sealing.open_sealed(raw, key)
        except sealing.SealError as exc:
            raise DataRejected(f"{entry.path}: {exc}", reason="DataDecryptFailed") from None


def _record(item: Any, data_format: str) -> Record | None:
    """The record in canonical shape, or None if it does not fit the format."""
    if not isinstance(item, dict):
        return None
    if data_format == "text":
        text = item.get("text")
        return {"text": text} if isinstance(text, str) and text else None
    if data_format == "prompt_completion":
        prompt, completion = item.get("prompt"), item.get("completion")
        if isinstance(prompt, str) and isinstance(completion, str) and completion:
            return {"prompt": prompt, "completion": completion}
        return None
    messages = item.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    clean = []
    for message in messages:
        if not (isinstance(message, dict) and message.get("role") in CHAT_ROLES
                and isinstance(message.get("content"), str)):
            return None
        clean.append({"role": message["role"], "content": message["content"]})
    if not any(message["role"] == "assistant" for message in clean):
        return None
    return {"messages": clean}


def parse_jsonl(path: str, text: bytes, data_format: str) -> list[Record]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise DataRejected(f"{path} line {number}: not valid JSON",
                               reason="DataMalformed") from None
        record = _record(item, data_format)
        if record is None:
            raise DataRejected(f"{path} line {number}: not a {data_format} record",
                               reason="DataMalformed")
        records.append(record)
    return records


def load(root: Path, *, manifest_name: str, expected_digest: str, encrypted: bool,
         key: bytes | None, data_format: str) -> DataSet:
    """The verified records of the data set at `root`; raises DataRejected otherwise."""
    try:
        document = manifest.load(root / manifest_name)
    except manifest.ManifestError as exc:
        raise DataRejected(str(exc), reason="ManifestInvalid") from None
    digest = manifest.digest_of(document)
    if digest != expected_digest:
        raise DataRejected(f"data-set manifest digest is {digest}, expected {expected_digest}",
                           reason="DataDigestMismatch")
    declared = document.get("encryption", ENCRYPTION_NONE)
    if encrypted != (declared != ENCRYPTION_NONE):
        raise DataRejected(f"config says encrypted={encrypted}, the manifest says "
                           f"encryption={declared}", reason="DataEncryptionMismatch")
    if encrypted and declared != sealing.SCHEME:
        raise DataRejected(f"unsupported encryption scheme {declared!r}",
                           reason="DataEncryptionMismatch")
    records: list[Record] = []
    files = bytes_read = 0
    for path, plaintext in verified_contents(root, document, key, manifest_name=manifest_name):
        records.extend(parse_jsonl(path, plaintext, data_format))
        files += 1
        bytes_read += len(plaintext)
    if not records:
        raise DataRejected("the data set holds no records", reason="DataEmpty")
    return DataSet(records, digest, files, bytes_read)
