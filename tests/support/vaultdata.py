"""What an admin puts in Vault for tests: a domain whose data key a transit key wraps, and
KV v2 secrets with known values (which the secret scan then looks for)."""

from __future__ import annotations

import uuid
from typing import Any

import hvac
import hvac.exceptions

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
from tests.support.kube import apply
from tests.support.objects import domain_with_claims


def transit_domain(vault: Any, kubectl: Kubectl, namespace: str, **retention: str) -> str:
    """A DataDomain admitting ``namespace``, encrypted under its own transit key; its name."""
    key = f"domain-{namespace}"
    vault.secrets.transit.create_key(key, key_type="aes256-gcm96")
    wrapped = vault.secrets.transit.generate_data_key(key, key_type="wrapped", bits=256)["data"]["ciphertext"]
    name = f"{namespace}-r"
    encryption = {"type": "vaultTransit", "vaultTransit": {"keyName": key, "wrappedDataKey": wrapped}}
    apply(kubectl, *domain_with_claims(name, namespace, encryption=encryption, retention=retention))
    return name


def write_secret(vault: Any, namespace: str, name: str) -> tuple[str, str]:
    """A KV v2 secret with one key "token"; its API path and value."""
    value = f"sv-{uuid.uuid4().hex}"
    vault.secrets.kv.v2.create_or_update_secret(f"{namespace}/{name}", secret={"token": value})
    return f"secret/data/{namespace}/{name}", value


def login(cluster: LocalCluster, role: str, jwt: str) -> hvac.Client:
    """A client logged in to the cluster's OpenBao through Kubernetes auth, as a pod would."""
    client = hvac.Client(url=cluster.vault_addr)
    client.auth.kubernetes.login(role, jwt)
    return client


def gone(vault: Any, path: str) -> bool:
    """Whether Vault answers 404 for ``path``."""
    try:
        vault.adapter.get(f"/v1/{path}")
    except hvac.exceptions.InvalidPath:
        return True
    return False
