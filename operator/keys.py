"""The operator's signing key, for artifacts and deletion receipts alike: a Vault transit key
when Vault is configured (the private key never leaves Vault), otherwise the embedded
default, an ECDSA P-256 key in a Secret only the operator reads, made on first use. The
public key is published in a ConfigMap for verifiers (`sealtune verify`, `model_signing`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from . import signing
from .adapters.kube import ApiError, KubeClient
from .adapters.vault import VaultAdmin
from .settings import Settings


@dataclass
class OperatorKeys:
    settings: Settings
    kube: KubeClient
    vault: VaultAdmin | None
    _pem: bytes | None = None
    _published: str | None = None
    """keyID of the public key last published."""

    async def signer(self) -> signing.KeySigner:
        """A signer for one publication or receipt batch (transit's latest key version)."""
        s = self.settings
        if self.vault is not None:
            signer: signing.KeySigner = await self.vault.with_client(
                lambda client: signing.TransitSigner(
                    client, s.signing_transit_key, mount=s.signing_transit_mount
                )
            )
        else:
            if self._pem is None:
                self._pem = await self._secret_key()
            signer = signing.PemSigner(self._pem)
        if self._published != signer.key_id:
            await self._publish(signer)
        return signer

    async def _secret_key(self) -> bytes:
        name, namespace = self.settings.signing_secret, self.settings.operator_namespace
        secret = await self.kube.get("Secret", name, namespace)
        if secret is None:
            pem = signing.new_private_key_pem()
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque",
                "data": {"private.pem": base64.b64encode(pem).decode()},
            }
            try:
                await self.kube.create(body)
                return pem
            except ApiError as exc:
                if exc.status != 409:
                    raise
                secret = await self.kube.get("Secret", name, namespace)
        assert secret is not None
        return base64.b64decode(secret["data"]["private.pem"])

    async def _publish(self, signer: signing.KeySigner) -> None:
        await self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": signing.PUBLIC_KEY_CONFIGMAP,
                    "namespace": self.settings.operator_namespace,
                },
                "data": {signing.PUBLIC_KEY_ENTRY: signer.public_key_pem.decode(), "keyID": signer.key_id},
            }
        )
        self._published = signer.key_id
