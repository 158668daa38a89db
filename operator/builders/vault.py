"""What a FineTuneJob asks of Vault, as pure data: the names of its Kubernetes-auth role, its
policy and its transit key; the policy's HCL; the role's parameters; and the instructions of
its pods' init container. Names carry the job's uid, so a job re-created under the same name
never inherits the keys or the grants of its predecessor."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from sealtune_trainer.vault_init import InitConfig

from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..api.v1alpha1.scalars import WRAPPED_KEY_PATTERN
from ..settings import Settings
from . import mounts
from .meta import workload_of

PREFIX = "sealtune-job-"
"""Every per-job Vault object's name starts with this; the operator's own Vault policy grants
it nothing beyond (deploy/vault/sealtune-operator.hcl)."""

INIT_CONTAINER = "vault-init"
INIT_CONFIG_FILE = "vault.json"
DATA_KEY_FILE = "data.key"
JOB_KEY_FILE = "job.key"
DATA_STORE_CREDENTIALS_FILE = "data-store-credentials.json"
TOKEN_TTL_SECONDS = 600
"""The init container needs its token for seconds, and revokes it when done."""


@dataclass(frozen=True)
class VaultPlan:
    """The Vault objects of one job."""

    name: str
    """Name of its role, policy and (when the domain encrypts) transit key."""
    namespace: str
    """The domain's workload namespace, where the job's pods and ServiceAccount live."""
    service_account: str
    secret_paths: tuple[str, ...]
    """Paths it reads: its declared secrets and the domain's data-store credentials."""
    transit_mount: str | None
    domain_key: str | None
    """The domain's transit key that wrapped the data set's key, if the data is encrypted."""
    domain_wrapped_key: str | None
    """The data set's key as domain_key wrapped it: the one ciphertext the job may decrypt under it."""
    token_max_ttl: int

    @property
    def data_key(self) -> str | None:
        """The job's own transit key: it wraps the key of the job's checkpoints and scratch."""
        return self.name if self.transit_mount else None

    def policy_hcl(self, wrapped_job_key: str | None) -> str:
        """The job's policy. Decrypting is pinned to the two wrapped keys the job owns (the data
        set's, and its own once made): with decrypt on a key alone, a pod could unwrap anything
        ever sealed under it, the domain's other data keys included. allowed_parameters also
        refuses every parameter it does not list (batch_input, context)."""
        rules = [f'path "{path}" {{\n  capabilities = ["read"]\n}}' for path in self.secret_paths]
        if self.transit_mount and self.domain_key and self.domain_wrapped_key:
            pinned = [(self.domain_key, self.domain_wrapped_key)]
            if wrapped_job_key:
                pinned.append((self.name, wrapped_job_key))
            rules += [_decrypt_rule(self.transit_mount, key, ciphertext) for key, ciphertext in pinned]
        header = f"# sealtune: FineTuneJob {self.namespace}/{self.service_account} pods, nothing else"
        return "\n".join([header, *rules]) + "\n"

    def role_parameters(self, audience: str) -> dict[str, Any]:
        return {
            "bound_service_account_names": [self.service_account],
            "bound_service_account_namespaces": [self.namespace],
            "audience": audience,
            # One name as a string: the operator's own Vault policy allows only sealtune-job-*
            # here, and Vault matches such a pattern against strings, never list items.
            "token_policies": self.name,
            "token_ttl": min(TOKEN_TTL_SECONDS, self.token_max_ttl),
            "token_max_ttl": self.token_max_ttl,
            "token_no_default_policy": False,
        }


def _decrypt_rule(mount: str, key: str, ciphertext: str) -> str:
    if not re.fullmatch(WRAPPED_KEY_PATTERN, ciphertext):
        raise ValueError(f"not a wrapped key (vault:v<n>:<base64>): {ciphertext[:16]!r}...")
    return (
        f'path "{mount}/decrypt/{key}" {{\n  capabilities = ["update"]\n'
        f'  allowed_parameters = {{\n    "ciphertext" = ["{ciphertext}"]\n  }}\n}}'
    )


def object_name(namespace: str, name: str, uid: str) -> str:
    base = f"{namespace}-{name}"
    if len(base) > 90:
        base = f"{base[:73]}-{hashlib.sha256(base.encode()).hexdigest()[:16]}"
    return f"{PREFIX}{base}-{uid[:8]}"


def plan(job: FineTuneJob, domain: DataDomain) -> VaultPlan | None:
    """The job's Vault objects, or None when it needs no Vault at all."""
    paths = [s.vault_path for s in job.spec.secrets]
    credentials = domain.spec.source.s3.credentials_vault_path if domain.spec.source.s3 else None
    if credentials:
        paths.append(credentials)
    transit = domain.spec.encryption.vault_transit
    if not paths and transit is None:
        return None
    name, namespace = job.metadata["name"], job.metadata["namespace"]
    workload = workload_of(job, domain)
    return VaultPlan(
        name=object_name(namespace, name, job.metadata.get("uid", "")),
        namespace=workload.namespace,
        service_account=workload.service_account,
        secret_paths=tuple(dict.fromkeys(paths)),
        transit_mount=transit.mount if transit else None,
        domain_key=transit.key_name if transit else None,
        domain_wrapped_key=transit.wrapped_data_key if transit else None,
        token_max_ttl=job.spec.scheduling.active_deadline_seconds,
    )


def init_config(
    job: FineTuneJob, domain: DataDomain, settings: Settings, wrapped_job_key: str | None
) -> InitConfig | None:
    """The init container's instructions; None when the job needs no Vault."""
    vault = plan(job, domain)
    if vault is None:
        return None
    address = domain.spec.network.vault_address or settings.vault_address or ""
    secrets = [{"path": s.vault_path, "key": s.key, "file": s.file_name} for s in job.spec.secrets]
    credentials = domain.spec.source.s3.credentials_vault_path if domain.spec.source.s3 else None
    if credentials:
        secrets.append({"path": credentials, "key": None, "file": DATA_STORE_CREDENTIALS_FILE})
    data_keys = []
    transit = domain.spec.encryption.vault_transit
    if transit is not None:
        data_keys.append(
            {
                "mount": transit.mount,
                "key": transit.key_name,
                "ciphertext": transit.wrapped_data_key,
                "file": DATA_KEY_FILE,
            }
        )
        if wrapped_job_key:
            data_keys.append(
                {
                    "mount": transit.mount,
                    "key": vault.name,
                    "ciphertext": wrapped_job_key,
                    "file": JOB_KEY_FILE,
                }
            )
    return InitConfig.model_validate(
        {
            "vaultAddress": address,
            "authMount": settings.vault_auth_mount,
            "role": vault.name,
            "tokenPath": f"{mounts.VAULT_TOKEN_DIR}/token",
            "secretsDir": mounts.SECRETS_DIR,
            "secrets": secrets,
            "dataKeys": data_keys,
        }
    )


def init_config_json(config: InitConfig) -> str:
    return json.dumps(
        config.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2, sort_keys=True
    )
