"""Reading a kubeconfig without the official client: certificates by path or inline, tokens, and
a clear refusal of what the operator cannot use."""

from __future__ import annotations

import base64
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealtune.adapters.kube import KubeconfigError, load_credentials


def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443/", **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_inline_certificates_load_and_leave_no_file_behind(tmp_path: Path, monkeypatch: Any) -> None:
    cert, key = self_signed()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = kubeconfig(
        tmp_path / "config",
        {"certificate-authority-data": b64(cert)},
        {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
    )
    credentials = load_credentials(path)
    assert credentials.server == "https://10.0.0.1:6443"
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl_context.get_ca_certs(), "the cluster's CA is trusted"
    assert credentials.headers() == {}
    assert list(scratch.iterdir()) == [], "the private key must not stay on disk"


def test_certificate_files_and_a_token(tmp_path: Path) -> None:
    cert, _ = self_signed()
    (tmp_path / "ca.crt").write_bytes(cert)
    cluster = {"certificate-authority": str(tmp_path / "ca.crt")}
    path = kubeconfig(tmp_path / "config", cluster, {"token": "t0k"})
    assert load_credentials(path).headers() == {"Authorization": "Bearer t0k"}


@pytest.mark.parametrize("user", [{"exec": {"command": "aws"}}, {"auth-provider": {"name": "oidc"}}])
def test_credentials_the_operator_cannot_use_are_refused(tmp_path: Path, user: dict[str, Any]) -> None:
    path = kubeconfig(tmp_path / "config", {"insecure-skip-tls-verify": True}, user)
    with pytest.raises(KubeconfigError, match="client certificate or a token"):
        load_credentials(path)
