"""Signed deletion receipts: what was deleted, when, under which policy, and how its absence
was checked, signed with the operator's key (the one that signs ModelArtifacts).

The signature is ECDSA P-256 over sha256 of ``CONTEXT`` followed by the receipt's canonical
JSON (sorted keys, no spaces, ASCII, the ``signature`` field left out), base64 of its DER form
in ``signature``. The context keeps a receipt's signature from being taken for a signature
over anything else the same key signs. Anyone with the public key (the ConfigMap
``sealtune-signing-key``) can check a receipt copied from a FineTuneJob's status or from the
audit log with ``verify_receipt``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sealtune.api.v1alpha1.finetunejob import DeletionReceipt
from sealtune.signing import KeySigner, SigningError
from sealtune.signing.signers import load_public_key

CONTEXT = b"sealtune.dev/DeletionReceipt/v1\n"


def receipt(
    *,
    kind: str,
    name: str,
    deleted_at: datetime,
    policy: str,
    verification: str,
    uid: str | None = None,
    digest: str | None = None,
) -> dict[str, Any]:
    """An unsigned receipt as status stores it (camelCase, unset fields left out), checked
    against the API's bounds so that what is signed is exactly what status will hold."""
    return DeletionReceipt(
        kind=kind,
        name=name,
        uid=uid,
        digest=digest,
        deleted_at=deleted_at,
        policy=policy,
        verification=verification,
    ).to_json()


def sign_receipt(receipt: Mapping[str, Any], signer: KeySigner) -> dict[str, Any]:
    """``receipt`` with its ``signature`` (any old one replaced). Raises ``SigningError`` when
    the signer fails or returns a signature its own public key rejects."""
    message = _message(receipt)
    signature = signer.sign_message(message)
    # As for artifacts: a remote signer must not yield a receipt that nobody can verify.
    try:
        load_public_key(signer.public_key_pem).verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SigningError(f"key {signer.key_id} returned a signature its public key rejects") from None
    return {**receipt, "signature": base64.b64encode(signature).decode()}


def verify_receipt(receipt: Mapping[str, Any], public_pem: bytes) -> bool:
    """Whether ``receipt`` carries a valid signature by ``public_pem``'s key over every other
    field. Raises ``SigningError`` when ``public_pem`` is not an ECDSA P-256 public key."""
    key = load_public_key(public_pem)
    encoded = receipt.get("signature")
    if not isinstance(encoded, str):
        return False
    try:
        signature = base64.b64decode(encoded, validate=True)
        key.verify(signature, _message(receipt), ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, InvalidSignature):
        return False
    return True


def _message(receipt: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
