"""The admission webhook's own CA and serving certificate, kept in a Secret in the operator's
namespace so every replica serves the same certificate and the registered caBundle holds."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .kube import Conflict, KubeClient

SECRET_NAME = "sealtune-webhook-tls"  # noqa: S105 (a name)
VALIDITY = datetime.timedelta(days=365)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(host: str) -> dict[str, bytes]:
    """A fresh CA and a serving certificate for ``host`` (an IP or a DNS name)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealtune-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
        "tls.key": _pem_key(key),
    }


async def ensure(kube: KubeClient, namespace: str, host: str, directory: Path) -> dict[str, Path]:
    """Reads the Secret, or creates it (the first replica wins a race), and writes its files
    into ``directory`` (mode 0600) for the webhook server."""
    secret = await kube.get("Secret", SECRET_NAME, namespace)
    if secret is None or secret.get("metadata", {}).get("annotations", {}).get("sealtune.dev/host") != host:
        files = issue(host)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": SECRET_NAME,
                "namespace": namespace,
                "annotations": {"sealtune.dev/host": host},
            },
            "data": {k: base64.b64encode(v).decode() for k, v in files.items()},
        }
        try:
            secret = await (kube.create(body) if secret is None else kube.apply(body))
        except Conflict:
            secret = await kube.get("Secret", SECRET_NAME, namespace)
    assert secret is not None
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {}
    for name, value in secret["data"].items():
        path = directory / name
        path.write_bytes(base64.b64decode(value))
        path.chmod(0o600)
        paths[name] = path
    return paths
