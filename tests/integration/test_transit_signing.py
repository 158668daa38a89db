"""Signing through Vault transit on the real OpenBao: the private key never leaves it, and the
bundles it signs are accepted by model_signing's library and its reference CLI, refused after
one flipped byte, and refused under another key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from sealtune import signing
from tests.support.artifacts import file_digests, flip_byte, model_signing_verify, write_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def transit(vault: Any) -> Iterator[str]:
    """A transit engine at a mount of this module's own, with two ECDSA P-256 keys."""
    mount = f"transit-test-{uuid.uuid4().hex[:8]}"
    vault.sys.enable_secrets_engine("transit", path=mount)
    for key in ("signing", "other"):
        vault.secrets.transit.create_key(key, key_type="ecdsa-p256", mount_point=mount)
    vault.secrets.transit.create_key("symmetric", key_type="aes256-gcm96", mount_point=mount)
    yield mount
    vault.sys.disable_secrets_engine(mount)


def test_transit_signs_and_both_verifiers_accept(vault: Any, transit: str, tmp_path: Path) -> None:
    model = write_model(tmp_path / "model")
    signer = signing.TransitSigner(vault, "signing", mount=transit)
    assert signer.key_id.startswith(f"vault-transit:{transit}/signing:v")
    signature = signing.sign_files(file_digests(model), signer, name="model")
    assert signature.key_id == signer.key_id

    signed = signing.verify_directory(signature.bundle, signer.public_key_pem, model)
    assert set(signed.files) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer/tokenizer.json",
    }
    bundle, key = model / signing.SIGNATURE_FILE, tmp_path / "transit.pub"
    bundle.write_text(signature.bundle)
    key.write_bytes(signer.public_key_pem)
    accepted = model_signing_verify(model, bundle, key)
    assert accepted.returncode == 0, accepted.stderr

    flip_byte(model / "adapter_model.safetensors", 2048)
    refused = model_signing_verify(model, bundle, key)
    assert refused.returncode == 1
    assert "adapter_model.safetensors" in refused.stderr
    with pytest.raises(signing.VerificationError, match=r"adapter_model\.safetensors: content differs"):
        signing.verify_directory(signature.bundle, signer.public_key_pem, model)


def test_a_bundle_signed_by_another_key_is_refused(vault: Any, transit: str, tmp_path: Path) -> None:
    model = write_model(tmp_path / "model")
    trusted = signing.TransitSigner(vault, "signing", mount=transit)
    other = signing.TransitSigner(vault, "other", mount=transit)
    signature = signing.sign_files(file_digests(model), other, name="model")
    with pytest.raises(signing.VerificationError, match="Key mismatch"):
        signing.verify_directory(signature.bundle, trusted.public_key_pem, model)
    bundle, key = model / signing.SIGNATURE_FILE, tmp_path / "trusted.pub"
    bundle.write_text(signature.bundle)
    key.write_bytes(trusted.public_key_pem)
    assert model_signing_verify(model, bundle, key).returncode == 1


def test_the_private_key_stays_in_vault_and_rotation_keeps_old_bundles_valid(
    vault: Any, transit: str, tmp_path: Path
) -> None:
    model = write_model(tmp_path / "model")
    key = vault.secrets.transit.read_key("signing", mount_point=transit)["data"]
    assert key["exportable"] is False
    assert all(
        set(version) <= {"certificate_chain", "creation_time", "name", "public_key"}
        for version in key["keys"].values()
    )

    before = signing.TransitSigner(vault, "signing", mount=transit)
    old = signing.sign_files(file_digests(model), before, name="model")
    vault.secrets.transit.rotate_key("signing", mount_point=transit)
    after = signing.TransitSigner(vault, "signing", mount=transit)
    assert after.key_id == f"vault-transit:{transit}/signing:v{key['latest_version'] + 1}"
    assert after.public_key_pem != before.public_key_pem
    new = signing.sign_files(file_digests(model), after, name="model")
    signing.verify_directory(old.bundle, before.public_key_pem, model)
    signing.verify_directory(new.bundle, after.public_key_pem, model)
    with pytest.raises(signing.VerificationError, match="Key mismatch"):
        signing.verify_directory(old.bundle, after.public_key_pem, model)


def test_unsuitable_keys_and_unreachable_vault_are_refused(vault: Any, transit: str) -> None:
    with pytest.raises(signing.SigningError, match="not ecdsa-p256"):
        signing.TransitSigner(vault, "symmetric", mount=transit)
    with pytest.raises(signing.SigningError, match="cannot read transit key"):
        signing.TransitSigner(vault, "absent", mount=transit)

    unreachable = hvac.Client(url="http://127.0.0.1:9", token="x")
    with pytest.raises(signing.SigningError, match="cannot read transit key"):
        signing.TransitSigner(unreachable, "signing", mount=transit)
