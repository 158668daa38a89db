"""ECDSA P-256 signers implementing model_signing's ``Signer`` interface.

model_signing's own key signer reads its private key from a file. The operator's key is never
on disk: it is in memory from a Secret (``PemSigner``) or never leaves Vault at all
(``TransitSigner``). So both implement the library's ``Signer`` the way its PKCS #11 signer
does: the library builds the in-toto payload, the signer signs the DSSE pre-authentication
encoding of it and returns the library's bundle type, which ``model_signing verify key``
reads like any bundle ``model_signing sign key`` wrote.
"""

from __future__ import annotations

import abc
import base64
import hashlib
from collections.abc import Callable
from typing import Any

import hvac
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import json_format  # type: ignore[import-untyped]  # protobuf has no types
from hvac.exceptions import VaultError
from model_signing._signing import sign_sigstore_pb, signing
from sigstore_models import intoto
from sigstore_models.bundle import v1 as bundle_pb
from sigstore_models.common import v1 as common_pb

from .errors import SigningError

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key from PEM; any other key is refused."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise SigningError("the public key is not a PEM public key") from None
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise SigningError("the public key is not an ECDSA P-256 key")
    return key


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """The PEM form model_signing hashes into a bundle's key hint (SubjectPublicKeyInfo)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def new_private_key_pem() -> bytes:
    """A fresh ECDSA P-256 private key, PKCS #8 PEM: the embedded default's key, which the
    operator keeps in a Secret only it can read."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KeySigner(sign_sigstore_pb.Signer, abc.ABC):
    """A model_signing signer over an ECDSA P-256 key; subclasses only produce the signature."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey, key_id: str) -> None:
        self._public_key = public_key
        self.public_key_pem = public_pem(public_key)
        """The public key to publish (PEM), the one ``model_signing verify key`` needs."""
        self.key_id = key_id
        """Names the key in ModelArtifact.spec.signature.keyID."""

    @abc.abstractmethod
    def sign_message(self, message: bytes) -> bytes:
        """A DER-encoded ECDSA signature over sha256(message)."""

    def sign_in_toto(self, raw: bytes) -> bytes:
        """The DSSE signature over an in-toto statement's bytes (their pre-authentication
        encoding), checked with the public key: a remote signer (a rotated or mismatched transit
        key) must not yield a signature that nobody can verify."""
        pae = sign_sigstore_pb.pae(raw)
        signature = self.sign_message(pae)
        try:
            self._public_key.verify(signature, pae, _ECDSA_SHA256)
        except InvalidSignature:
            raise SigningError(f"key {self.key_id} returned a signature its public key rejects") from None
        return signature

    def sign(self, payload: signing.Payload) -> sign_sigstore_pb.Signature:
        # Compact JSON: the bundle must fit the ModelArtifact's 64 KiB field with 256 files.
        raw = json_format.MessageToJson(payload.statement.pb, indent=None).encode("utf-8")
        signature = self.sign_in_toto(raw)
        envelope = intoto.Envelope(
            payload=base64.b64encode(raw),
            payload_type=signing._IN_TOTO_JSON_PAYLOAD_TYPE,
            signatures=[intoto.Signature(sig=base64.b64encode(signature), keyid="")],
        )
        # The hint is what model_signing's verifier matches against the public key it is given.
        material = bundle_pb.VerificationMaterial(
            public_key=common_pb.PublicKeyIdentifier(hint=hashlib.sha256(self.public_key_pem).hexdigest()),
            tlog_entries=[],
        )
        return sign_sigstore_pb.Signature(
            bundle_pb.Bundle(
                # The library's constant, typed str; its verifier accepts exactly this one.
                media_type=sign_sigstore_pb._BUNDLE_MEDIA_TYPE,  # type: ignore[arg-type]
                verification_material=material,
                dsse_envelope=envelope,
            )
        )


class PemSigner(KeySigner):
    """Signs with a PEM private key held in memory (the embedded default: a Secret only the
    operator reads). The key id is the public key's fingerprint, as in the bundle's hint."""

    def __init__(self, private_key_pem: bytes) -> None:
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError):
            # Never echo the input: it is a private key.
            raise SigningError("the signing key is not an unencrypted PEM private key") from None
        if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
            raise SigningError("the signing key is not an ECDSA P-256 key")
        public_key = key.public_key()
        super().__init__(public_key, "sha256:" + hashlib.sha256(public_pem(public_key)).hexdigest())
        self._key = key

    def sign_message(self, message: bytes) -> bytes:
        return self._key.sign(message, _ECDSA_SHA256)


class TransitSigner(KeySigner):
    """Signs through Vault (or OpenBao) transit: the private key never leaves Vault.

    The key must be of type ``ecdsa-p256``. Its latest version is read once, here, and every
    signature is made with that version, so a rotation between reading the public key and
    signing cannot produce a bundle whose key hint and signature disagree: build one signer
    per publication. Only a sha256 travels to Vault (``prehashed``), not the payload.
    """

    def __init__(self, client: hvac.Client, key: str, *, mount: str = "transit") -> None:
        self._client = client
        self._key = key
        self._mount = mount
        data = self._call("read", lambda: client.secrets.transit.read_key(name=key, mount_point=mount))
        if data.get("type") != "ecdsa-p256":
            raise SigningError(f"transit key {mount}/{key} is {data.get('type')!r}, not ecdsa-p256")
        self._version = int(data["latest_version"])
        pem = str(data["keys"][str(self._version)]["public_key"]).encode()
        super().__init__(load_public_key(pem), f"vault-transit:{mount}/{key}:v{self._version}")

    def sign_message(self, message: bytes) -> bytes:
        digest = base64.b64encode(hashlib.sha256(message).digest()).decode()
        data = self._call(
            "sign with",
            lambda: self._client.secrets.transit.sign_data(
                name=self._key,
                hash_input=digest,
                key_version=self._version,
                hash_algorithm="sha2-256",
                prehashed=True,
                marshaling_algorithm="asn1",
                mount_point=self._mount,
            ),
        )
        # "vault:v<version>:<base64 DER>", the same prefix from OpenBao.
        prefix, version, encoded = str(data["signature"]).split(":", 2)
        if prefix != "vault" or version != f"v{self._version}":
            raise SigningError(f"transit signed with {prefix}:{version}, expected v{self._version}")
        return base64.b64decode(encoded)

    def _call(self, what: str, request: Callable[[], Any]) -> dict[str, Any]:
        try:
            response = request()
        except (VaultError, requests.RequestException) as exc:
            raise SigningError(f"cannot {what} transit key {self._mount}/{self._key}: {exc}") from None
        data: dict[str, Any] = response["data"]
        return data
