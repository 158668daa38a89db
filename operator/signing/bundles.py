"""Signing a list of file digests, and verifying bundles and directories, with model_signing.

The library hashes models from disk; the operator must sign without reading the weights. So
``sign_files`` builds the library's own ``Manifest`` from the digests the trainer reported
(the items its file serialization would produce from the same files) and hands it to the
library's ``Payload``. Checking a signature is the library's key verifier; checking files is
the library's hashing of the directory, compared here with what the bundle signs so that each
changed, missing or unsigned file can be named (the library reports raw digest bytes).

Paths are checked before signing and after verifying (model-signing's lessons: ``..`` paths
hashed outside the model root, sigstore/model-transparency#647; empty models signable, #661).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from model_signing import hashing as model_hashing
from model_signing import manifest
from model_signing._hashing import hashing
from model_signing._signing import sign_ec_key, sign_sigstore_pb, signing

from sealtune.api.v1alpha1.modelartifact import Signature

from .errors import SigningError, VerificationError
from .signers import KeySigner, load_public_key

SIGNATURE_FILE = "model.sig"
"""The bundle's file name beside the files, model_signing's default; verification ignores it."""

MAX_BUNDLE_BYTES = 65_536
"""ModelArtifact.spec.signature.bundle's limit."""

# What `model_signing sign key` records for a directory signed file by file with sha256. The
# signature's own name is listed as ignored, so a bundle exported beside the files verifies.
_SERIALIZATION: dict[str, Any] = {
    "method": "files",
    "hash_type": "sha256",
    "allow_symlinks": False,
    "ignore_paths": [SIGNATURE_FILE],
}
_HEX = frozenset("0123456789abcdef")


class FileRecord(Protocol):
    """One file as the trainer reports it; ModelArtifact's FileDigest is one. Sizes are not
    part of the model_signing format, so only the path and digest are signed."""

    @property
    def path(self) -> str: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class SignedManifest:
    """What a verified bundle signs."""

    name: str
    """The model name in the statement's subject (the artifact's name)."""

    files: dict[str, str]
    """Relative path -> sha256 hex, for every signed file."""


def check_path(path: str) -> str:
    """Returns ``path`` if it may be signed: relative, '/'-separated, no empty, '.', '..' or
    hidden segments (model_signing ignores .git* files when verifying, so a signed one could
    never verify), and not the bundle's own name."""
    segments = path.split("/")
    if (
        not path
        or "\\" in path
        or "\0" in path
        or any(not segment or segment.startswith(".") for segment in segments)
    ):
        raise SigningError(
            f"refusing path {path!r}: it must be relative, without '..', '.', empty or hidden parts"
        )
    if path == SIGNATURE_FILE:
        raise SigningError(f"refusing path {path!r}: it is the signature's own file name")
    return path


def sign_files(
    files: Iterable[FileRecord], signer: KeySigner, *, name: str, now: datetime | None = None
) -> Signature:
    """Signs the listed files' digests; the result is ModelArtifact.spec.signature.

    ``name`` is the model name in the statement (use the ModelArtifact's name). Refuses an
    empty list, a path twice, unsafe paths and malformed digests before signing anything.
    """
    if not name:
        raise SigningError("refusing to sign without a model name")
    serialization = manifest.SerializationType.from_args(dict(_SERIALIZATION))
    items: dict[str, manifest.ManifestItem] = {}
    for record in files:
        path = check_path(record.path)
        if path in items:
            raise SigningError(f"refusing to sign: {path!r} is listed twice")
        if len(record.sha256) != 64 or not _HEX.issuperset(record.sha256):
            raise SigningError(f"refusing to sign: the sha256 of {path!r} is not 64 lowercase hex digits")
        items[path] = serialization.new_item(path, hashing.Digest("sha256", bytes.fromhex(record.sha256)))
    if not items:
        raise SigningError("refusing to sign an empty file list")
    payload = signing.Payload(manifest.Manifest(name, items.values(), serialization))
    bundle = signer.sign(payload).bundle.to_json()
    if len(bundle.encode()) > MAX_BUNDLE_BYTES:
        raise SigningError(f"the bundle is {len(bundle.encode())} bytes, more than {MAX_BUNDLE_BYTES}")
    return Signature(bundle=bundle, key_id=signer.key_id, signed_at=now or datetime.now(UTC))


def signed_files(bundle: str, public_key_pem: bytes) -> SignedManifest:
    """Checks the bundle's signature with the public key (model_signing's key verifier) and
    returns what it signs; raises VerificationError if it does not verify or lists an unsafe
    path, no file, or anything but sha256 file digests."""
    try:
        load_public_key(public_key_pem)
    except SigningError as exc:
        raise VerificationError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="sealtune-verify-") as tmp:
        # The library reads keys and bundles from files only; both are public material.
        key_path, bundle_path = Path(tmp, "key.pub"), Path(tmp, SIGNATURE_FILE)
        key_path.write_bytes(public_key_pem)
        bundle_path.write_text(bundle, encoding="utf-8")
        try:
            signature = sign_sigstore_pb.Signature.read(bundle_path)
            signed = sign_ec_key.Verifier(key_path).verify(signature)
        except (ValueError, KeyError, TypeError, InvalidSignature) as exc:
            raise VerificationError(f"the signature does not verify: {_reason(exc)}") from None
    if signed.serialization_type.get("method") != "files":
        raise VerificationError("the bundle does not sign whole files")
    files: dict[str, str] = {}
    for resource in signed.resource_descriptors():
        if resource.digest.algorithm != "sha256":
            raise VerificationError(f"{resource.identifier!r} is not signed with sha256")
        try:
            files[check_path(resource.identifier)] = resource.digest.digest_hex
        except SigningError as exc:
            raise VerificationError(str(exc)) from None
    if not files:
        raise VerificationError("the bundle signs no file")
    return SignedManifest(name=signed.model_name, files=files)


def verify_directory(bundle: str, public_key_pem: bytes, directory: Path) -> SignedManifest:
    """Verifies the signature, then rehashes ``directory`` with model_signing's hashing (as
    ``model_signing verify key`` does: git files and the bundle's own name are ignored) and
    requires exactly the signed files: a changed, missing or unsigned file fails, each named
    in the error. Returns what the bundle signs."""
    signed = signed_files(bundle, public_key_pem)
    if not directory.is_dir():
        raise VerificationError(f"{directory} is not a directory")
    hashing_config = model_hashing.Config()  # type: ignore[no-untyped-call]  # an unannotated __init__
    try:
        found = hashing_config.set_ignored_paths(paths=[SIGNATURE_FILE]).hash(directory)
    except (ValueError, OSError) as exc:
        raise VerificationError(f"cannot hash {directory}: {exc}") from None
    actual = {r.identifier: r.digest.digest_hex for r in found.resource_descriptors()}
    problems = [f"{path}: missing" for path in sorted(signed.files.keys() - actual.keys())]
    problems += [f"{path}: not signed" for path in sorted(actual.keys() - signed.files.keys())]
    problems += [
        f"{path}: content differs from the signed sha256"
        for path in sorted(signed.files.keys() & actual.keys())
        if signed.files[path] != actual[path]
    ]
    if problems:
        raise VerificationError("the files do not match the signature: " + "; ".join(problems))
    return signed


def _reason(exc: Exception) -> str:
    if isinstance(exc, InvalidSignature):
        return "the signature does not match the statement and the public key"
    if isinstance(exc, KeyError):
        return f"the bundle lacks {exc}"
    return str(exc) or type(exc).__name__
