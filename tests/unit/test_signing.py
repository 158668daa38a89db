"""Signing digests and verifying bundles and directories, with an in-memory PEM key: paths
refused before anything is signed, bundles the library and its reference CLI accept, and each
kind of tampering caught (a flipped byte, a missing or unsigned file, another key, a forged
or empty payload)."""

from __future__ import annotations

import base64
import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import manifest
from model_signing._hashing import hashing
from model_signing._signing import signing as library

from sealtune import signing
from sealtune.api.v1alpha1 import ModelArtifact
from sealtune.api.v1alpha1.modelartifact import FileDigest
from tests.support.artifacts import (
    artifact_manifest,
    file_digests,
    flip_byte,
    job_manifest,
    model_signing_verify,
    write_model,
)

pytestmark = pytest.mark.unit

SHA = "ab" * 32


@pytest.fixture(scope="module")
def signer() -> signing.PemSigner:
    return signing.PemSigner(signing.new_private_key_pem())


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


class NeverSigns(signing.KeySigner):
    """Fails the test if anything reaches the key."""

    def __init__(self) -> None:
        super().__init__(ec.generate_private_key(ec.SECP256R1()).public_key(), "never")

    def sign_message(self, message: bytes) -> bytes:
        raise AssertionError("signed although the input should have been refused")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "..",
        "../x",
        "a/../b",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        ".git/config",
        "dir/.hidden",
        "a\\b",
        "a\0b",
        "model.sig",
    ],
)
def test_refuses_unsafe_paths_before_signing(path: str) -> None:
    with pytest.raises(signing.SigningError, match="refusing"):
        signing.sign_files(
            [FileDigest.model_construct(path=path, sha256=SHA, size=1)], NeverSigns(), name="m"
        )


@pytest.mark.parametrize(
    "path", ["a", "adapter_model.safetensors", "dir/sub/file.bin", "sub/model.sig", "a..b"]
)
def test_accepts_plain_relative_paths(path: str) -> None:
    assert signing.check_path(path) == path


def test_refuses_an_empty_list_a_path_twice_and_bad_digests() -> None:
    with pytest.raises(signing.SigningError, match="empty"):
        signing.sign_files([], NeverSigns(), name="m")
    twice = [FileDigest(path="a", sha256=SHA, size=1), FileDigest(path="a", sha256=SHA, size=1)]
    with pytest.raises(signing.SigningError, match="twice"):
        signing.sign_files(twice, NeverSigns(), name="m")
    for bad in ("AB" * 32, "ab" * 31, "zz" * 32):
        with pytest.raises(signing.SigningError, match="64 lowercase hex"):
            signing.sign_files(
                [FileDigest.model_construct(path="a", sha256=bad, size=1)], NeverSigns(), name="m"
            )
    with pytest.raises(signing.SigningError, match="name"):
        signing.sign_files([FileDigest(path="a", sha256=SHA, size=1)], NeverSigns(), name="")


def test_signature_fields_and_the_signed_manifest(signer: signing.PemSigner, model: Path) -> None:
    digests = file_digests(model)
    signature = signing.sign_files(digests, signer, name="support-assistant-v1")
    assert signature.algorithm == "ecdsa-p256-sha256"
    assert signature.key_id == signer.key_id
    assert signature.key_id.startswith("sha256:")
    bundle = json.loads(signature.bundle)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == signer.key_id.removeprefix("sha256:")
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert [r["name"] for r in statement["predicate"]["resources"]] == sorted(d.path for d in digests)

    signed = signing.signed_files(signature.bundle, signer.public_key_pem)
    assert signed.name == "support-assistant-v1"
    assert signed.files == {d.path: d.sha256 for d in digests}
    assert signing.verify_directory(signature.bundle, signer.public_key_pem, model) == signed


def test_the_reference_cli_accepts_the_bundle(signer: signing.PemSigner, model: Path, tmp_path: Path) -> None:
    signature = signing.sign_files(file_digests(model), signer, name="m")
    bundle, key = model / signing.SIGNATURE_FILE, tmp_path / "key.pub"
    bundle.write_text(signature.bundle)
    key.write_bytes(signer.public_key_pem)
    accepted = model_signing_verify(model, bundle, key)
    assert accepted.returncode == 0, accepted.stderr
    assert "Verification succeeded" in accepted.stdout
    # The bundle beside the files is ignored by both verifiers.
    signing.verify_directory(signature.bundle, signer.public_key_pem, model)

    flip_byte(model / "adapter_model.safetensors", 100)
    assert model_signing_verify(model, bundle, key).returncode == 1
    with pytest.raises(signing.VerificationError, match=r"adapter_model.safetensors: content differs"):
        signing.verify_directory(signature.bundle, signer.public_key_pem, model)


def test_missing_and_unsigned_files_fail(signer: signing.PemSigner, model: Path) -> None:
    signature = signing.sign_files(file_digests(model), signer, name="m")
    (model / "extra.bin").write_bytes(b"x")
    (model / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(signing.VerificationError) as failure:
        signing.verify_directory(signature.bundle, signer.public_key_pem, model)
    assert "tokenizer/tokenizer.json: missing" in str(failure.value)
    assert "extra.bin: not signed" in str(failure.value)


def test_symlinks_and_missing_directories_fail(
    signer: signing.PemSigner, model: Path, tmp_path: Path
) -> None:
    signature = signing.sign_files(file_digests(model), signer, name="m")
    with pytest.raises(signing.VerificationError, match="not a directory"):
        signing.verify_directory(signature.bundle, signer.public_key_pem, tmp_path / "absent")
    (model / "adapter_config.json").unlink()
    (model / "adapter_config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(signing.VerificationError, match="cannot hash"):
        signing.verify_directory(signature.bundle, signer.public_key_pem, model)


def test_another_key_is_refused(signer: signing.PemSigner, model: Path) -> None:
    other = signing.PemSigner(signing.new_private_key_pem())
    signature = signing.sign_files(file_digests(model), other, name="m")
    with pytest.raises(signing.VerificationError, match="Key mismatch"):
        signing.signed_files(signature.bundle, signer.public_key_pem)
    # Without the key hint, the signature itself must still fail.
    bundle = json.loads(signature.bundle)
    del bundle["verificationMaterial"]["publicKey"]["hint"]
    with pytest.raises(signing.VerificationError, match="does not verify"):
        signing.signed_files(json.dumps(bundle), signer.public_key_pem)


def test_a_forged_payload_is_refused(signer: signing.PemSigner, model: Path) -> None:
    signature = signing.sign_files(file_digests(model), signer, name="m")
    bundle = json.loads(signature.bundle)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = SHA
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(signing.VerificationError, match="does not verify"):
        signing.signed_files(json.dumps(bundle), signer.public_key_pem)
    with pytest.raises(signing.VerificationError, match="does not verify"):
        signing.signed_files("{}", signer.public_key_pem)


def _sign_raw(signer: signing.KeySigner, items: list[Any]) -> str:
    """A bundle over an arbitrary manifest, bypassing sign_files' checks, as a forger would."""
    serialization = manifest.SerializationType.from_args(
        {"method": "files", "hash_type": "sha256", "allow_symlinks": False}
    )
    return signer.sign(library.Payload(manifest.Manifest("m", items, serialization))).bundle.to_json()


def test_verification_refuses_validly_signed_escapes_and_empty_manifests(signer: signing.PemSigner) -> None:
    escape = manifest.FileManifestItem(
        path=PurePosixPath("../outside"), digest=hashing.Digest("sha256", bytes.fromhex(SHA))
    )
    with pytest.raises(signing.VerificationError, match=r"refusing path '\.\./outside'"):
        signing.signed_files(_sign_raw(signer, [escape]), signer.public_key_pem)
    with pytest.raises(signing.VerificationError, match="signs no file"):
        signing.signed_files(_sign_raw(signer, []), signer.public_key_pem)


def test_keys_other_than_p256_are_refused(signer: signing.PemSigner) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    pem = p384.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(signing.SigningError, match="P-256"):
        signing.PemSigner(pem)
    with pytest.raises(signing.SigningError, match="not an unencrypted PEM") as failure:
        signing.PemSigner(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    assert "c2VjcmV0" not in str(failure.value)
    public_p384 = p384.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = signing.sign_files([FileDigest(path="a", sha256=SHA, size=1)], signer, name="m")
    with pytest.raises(signing.VerificationError, match="P-256"):
        signing.signed_files(signature.bundle, public_p384)


def test_256_files_fit_the_artifact_field(signer: signing.PemSigner) -> None:
    files = [
        FileDigest(path=f"shards/model-{i:05d}-of-00256.safetensors", sha256=SHA, size=1) for i in range(256)
    ]
    signature = signing.sign_files(files, signer, name="m")
    assert len(signature.bundle) <= signing.bundles.MAX_BUNDLE_BYTES


def test_check_artifact_ties_signature_spec_and_provenance(signer: signing.PemSigner, model: Path) -> None:
    artifact = ModelArtifact.model_validate(
        artifact_manifest("support-assistant-v1", model, signer, job=job_manifest("support-assistant", "ml"))
    )
    check = signing.check_artifact(artifact, signer.public_key_pem, model)
    assert check.ok and check.files_checked, check
    assert check.signed is not None and len(check.signed.files) == 3

    renamed = artifact.model_copy(update={"metadata": {**artifact.metadata, "name": "other"}})
    assert any(
        "not 'ml/other'" in p for p in signing.check_artifact(renamed, signer.public_key_pem).signature
    )
    # The same record copied into another namespace: both signatures name the original.
    moved = artifact.model_copy(update={"metadata": {**artifact.metadata, "namespace": "team-b"}})
    check = signing.check_artifact(moved, signer.public_key_pem)
    assert any("not 'team-b/support-assistant-v1'" in p for p in check.signature), check
    assert "internalParameters.artifact is not this artifact's" in check.provenance

    unsigned = artifact.model_copy(deep=True)
    unsigned.spec.signature.provenance = None
    assert "the statement is not signed" in " ".join(
        signing.check_artifact(unsigned, signer.public_key_pem).signature
    )
    edited = artifact.model_copy(deep=True)
    edited.spec.provenance["predicate"]["buildDefinition"]["externalParameters"]["training"]["maxSteps"] = 7
    problems = signing.check_artifact(edited, signer.public_key_pem).signature
    assert "the signed provenance statement is not spec.provenance" in problems

    listed = artifact.model_copy(deep=True)
    listed.spec.digests.files[0].sha256 = SHA
    listed.spec.digests.files.append(FileDigest(path="unsigned.bin", sha256=SHA, size=1))
    problems = signing.check_artifact(listed, signer.public_key_pem).signature
    assert "adapter_config.json: spec.digests.files and the signature disagree on its sha256" in problems
    assert "unsigned.bin: listed in spec.digests.files but not signed" in problems

    flip_byte(model / "adapter_config.json")
    check = signing.check_artifact(artifact, signer.public_key_pem, model)
    assert not check.ok and check.files and not check.signature and not check.provenance
