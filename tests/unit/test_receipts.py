"""Signed deletion receipts: a receipt signed with the operator's PEM key verifies with its
public key, after the JSON round trip status puts it through, and stops verifying when any
field, the key or the signature changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealtune import receipts, signing
from sealtune.api.v1alpha1.finetunejob import DeletionReceipt

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def signer() -> signing.PemSigner:
    return signing.PemSigner(signing.new_private_key_pem())


def unsigned() -> dict[str, Any]:
    return receipts.receipt(
        kind="PersistentVolumeClaim",
        name="tune-scratch",
        uid="0b5e-42",
        digest=DIGEST,
        deleted_at=datetime(2025, 3, 1, 12, 0, 5, 250000, tzinfo=UTC),
        policy="retention.trainingCopies=24h",
        verification="GET returned 404",
    )


def test_receipt_is_what_status_stores() -> None:
    assert unsigned() == {
        "kind": "PersistentVolumeClaim",
        "name": "tune-scratch",
        "uid": "0b5e-42",
        "digest": DIGEST,
        "deletedAt": "2025-03-01T12:00:05Z",
        "policy": "retention.trainingCopies=24h",
        "verification": "GET returned 404",
    }
    bare = receipts.receipt(
        kind="TransitKey",
        name="team-a-tune",
        deleted_at=datetime(2025, 3, 1, tzinfo=UTC),
        policy="retention.dataKey=0s",
        verification="transit decrypt refused",
    )
    assert "uid" not in bare and "digest" not in bare and "signature" not in bare


def test_receipt_refuses_what_status_would() -> None:
    with pytest.raises(pydantic.ValidationError):
        receipts.receipt(
            kind="Persistent Volume",
            name="x",
            deleted_at=datetime(2025, 3, 1, tzinfo=UTC),
            policy="p",
            verification="v",
        )


def test_sign_and_verify(signer: signing.PemSigner) -> None:
    signed = receipts.sign_receipt(unsigned(), signer)
    assert {k: v for k, v in signed.items() if k != "signature"} == unsigned()
    assert receipts.verify_receipt(signed, signer.public_key_pem)
    # As status holds it: validated by the API's model and through JSON.
    stored = json.loads(json.dumps(DeletionReceipt.model_validate(signed).to_json()))
    assert receipts.verify_receipt(stored, signer.public_key_pem)


def test_signing_again_replaces_the_signature(signer: signing.PemSigner) -> None:
    signed = receipts.sign_receipt(unsigned(), signer)
    again = receipts.sign_receipt(signed, signer)
    assert receipts.verify_receipt(again, signer.public_key_pem)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "ConfigMap"),
        ("name", "tune-scratch2"),
        ("uid", "0b5e-43"),
        ("digest", "sha256:" + "cd" * 32),
        ("deletedAt", "2025-03-01T12:00:06Z"),
        ("policy", "retention.trainingCopies=0s"),
        ("verification", "not checked"),
        ("namespace", "team-b"),
    ],
)
def test_a_changed_or_added_field_fails(signer: signing.PemSigner, field: str, value: str) -> None:
    signed = receipts.sign_receipt(unsigned(), signer)
    assert not receipts.verify_receipt({**signed, field: value}, signer.public_key_pem)


@pytest.mark.parametrize("field", ["uid", "digest", "policy"])
def test_a_removed_field_fails(signer: signing.PemSigner, field: str) -> None:
    signed = receipts.sign_receipt(unsigned(), signer)
    del signed[field]
    assert not receipts.verify_receipt(signed, signer.public_key_pem)


@pytest.mark.parametrize("signature", [None, 7, "", "not base64!", "AAAA", "MEUCIQ=="])
def test_a_missing_or_broken_signature_fails(signer: signing.PemSigner, signature: Any) -> None:
    signed = {**receipts.sign_receipt(unsigned(), signer), "signature": signature}
    assert not receipts.verify_receipt(signed, signer.public_key_pem)


def test_another_key_fails(signer: signing.PemSigner) -> None:
    signed = receipts.sign_receipt(unsigned(), signer)
    other = signing.PemSigner(signing.new_private_key_pem())
    assert not receipts.verify_receipt(signed, other.public_key_pem)


def test_a_key_that_is_not_p256_is_refused(signer: signing.PemSigner) -> None:
    signed = receipts.sign_receipt(unsigned(), signer)
    with pytest.raises(signing.SigningError, match="not a PEM public key"):
        receipts.verify_receipt(signed, b"not a key")


class WrongKey(signing.KeySigner):
    """A remote signer gone wrong: it signs with a key other than the one it publishes."""

    def __init__(self) -> None:
        super().__init__(ec.generate_private_key(ec.SECP256R1()).public_key(), "wrong")
        self._other = signing.PemSigner(signing.new_private_key_pem())

    def sign_message(self, message: bytes) -> bytes:
        return self._other.sign_message(message)


def test_a_signature_the_signers_key_rejects_is_refused() -> None:
    with pytest.raises(signing.SigningError, match="key wrong returned a signature its public key rejects"):
        receipts.sign_receipt(unsigned(), WrongKey())
