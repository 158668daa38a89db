"""The provenance statement, signed: a DSSE envelope (in-toto's signature wrapper, the one the
model_signing bundle uses too) around the artifact's in-toto statement with its SLSA
predicate, made with the same key. Its JSON is what ModelArtifact.spec.signature.provenance
holds; ``signed_statement`` checks it and returns the statement."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from model_signing._signing import sign_sigstore_pb

from .errors import SigningError, VerificationError
from .signers import _ECDSA_SHA256, KeySigner, load_public_key

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def canonical(statement: Mapping[str, Any]) -> bytes:
    return json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()


def sign_statement(statement: Mapping[str, Any], signer: KeySigner) -> str:
    """The DSSE envelope (JSON text) of ``statement`` signed by ``signer``."""
    payload = canonical(statement)
    signature = signer.sign_in_toto(payload)
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(signature).decode()}],
    }
    return json.dumps(envelope, separators=(",", ":"))


def signed_statement(envelope: str, public_key_pem: bytes) -> dict[str, Any]:
    """The statement ``envelope`` signs, after checking its signature with the public key;
    raises VerificationError otherwise."""
    try:
        document = json.loads(envelope)
        payload = base64.b64decode(document["payload"], validate=True)
        (only,) = document["signatures"]
        signature = base64.b64decode(only["sig"], validate=True)
        payload_type = document["payloadType"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise VerificationError("the provenance envelope is not a DSSE envelope with one signature") from None
    if payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"the provenance envelope holds {payload_type!r}, not an in-toto statement")
    try:
        key = load_public_key(public_key_pem)
        key.verify(signature, sign_sigstore_pb.pae(payload), _ECDSA_SHA256)
    except (SigningError, InvalidSignature):
        raise VerificationError("the provenance signature does not verify with the signer's key") from None
    statement = json.loads(payload)
    if not isinstance(statement, dict):
        raise VerificationError("the provenance envelope does not hold a JSON object")
    return statement
