"""The operator's own Vault client: it logs in through the Kubernetes auth method with its own
ServiceAccount token (or, in development, a token file), and manages each job's policy, role
and transit key. It never reads a secret value: secret paths are checked through KV v2
metadata, and a job's data key is only ever handled wrapped (ciphertext).

hvac is synchronous; every call runs in a worker thread so the event loop never blocks."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import hvac
import hvac.exceptions
import requests

from .. import metrics, threads
from ..builders.vault import VaultPlan
from ..settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT_SECONDS = 10
SHRED_PROOF_CIPHERTEXT = "vault:v1:c2VhbHR1bmUgc2hyZWQgcHJvb2Y="
"""Meaningless; deploy/vault/sealtune-operator.hcl allows decrypting only this."""


class VaultProblem(Exception):
    """Vault could not do what the job needs. ``reason`` is a SecretsReady reason; ``transient``
    says whether retrying may help. Messages name paths and objects, never values."""

    def __init__(self, reason: str, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class Grant:
    """What exists in Vault for one job, as status.vault records it."""

    role: str | None
    """None while the job may not run: no role, no policy, nothing can log in."""
    policy: str | None
    data_key: str | None
    transit_mount: str | None
    wrapped_data_key: str | None

    def status(self) -> dict[str, str]:
        fields = {
            "role": self.role,
            "policy": self.policy,
            "dataKey": self.data_key,
            "transitMount": self.transit_mount,
            "wrappedDataKey": self.wrapped_data_key,
        }
        return {k: v for k, v in fields.items() if v}


def kv2_metadata_path(path: str) -> str | None:
    """``<mount>/metadata/<name>`` for a KV v2 data path ``<mount>/data/<name>``, else None."""
    mount, sep, name = path.partition("/data/")
    return f"{mount}/metadata/{name}" if sep and mount and name else None


class VaultAdmin:
    def __init__(self, settings: Settings) -> None:
        address = settings.vault_operator_address or settings.vault_address
        if not address:
            raise ValueError("no Vault address configured")
        self.settings = settings
        verify: bool | str = settings.vault_ca_file or True
        self._client = hvac.Client(url=address, timeout=TIMEOUT_SECONDS, verify=verify)
        # hvac picks up $VAULT_TOKEN or ~/.vault-token: the operator acts only under the token of
        # its own login, never one the host's user happens to hold.
        self._client.token = None
        self._lock = threading.Lock()
        self._own_token = False
        """Whether the client's token came from this process's own login (then it may revoke it)."""

    # --- plumbing -------------------------------------------------------------------------

    def _login(self) -> None:
        s = self.settings
        if s.vault_token_file:
            self._client.token = Path(s.vault_token_file).read_text().strip()
            return
        jwt = Path(s.vault_jwt_path).read_text().strip()
        self._client.auth.kubernetes.login(s.vault_role, jwt, mount_point=s.vault_auth_mount)
        self._own_token = True

    def _call(self, fn: Callable[[], T]) -> T:
        """Runs ``fn`` logged in, logging in again once if the token was refused (expired,
        or revoked), and turns hvac's errors into VaultProblems."""
        try:
            with self._lock:
                if not self._client.token:
                    self._login()
            try:
                return fn()
            except hvac.exceptions.Forbidden:
                with self._lock:
                    self._login()
                return fn()
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise VaultProblem(
                "VaultUnavailable", f"Vault is unreachable ({type(exc).__name__})", transient=True
            ) from None
        except hvac.exceptions.VaultDown:
            raise VaultProblem("VaultSealed", "Vault is sealed", transient=True) from None
        except (
            hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway,
            hvac.exceptions.UnexpectedError,
        ) as exc:
            raise VaultProblem(
                "VaultUnavailable", f"Vault answered with an error ({type(exc).__name__})", transient=True
            ) from None
        except hvac.exceptions.Forbidden:
            raise VaultProblem(
                "VaultPermissionDenied",
                f"Vault refused the operator (role {self.settings.vault_role}): check its policy",
                transient=True,
            ) from None
        except OSError as exc:
            raise VaultProblem(
                "VaultUnavailable",
                f"cannot read the operator's Vault credentials: {exc.strerror}",
                transient=True,
            ) from None

    def _logout(self) -> None:
        self._client.auth.token.revoke_self()
        self._own_token = False

    async def logout(self) -> None:
        """Revokes the operator's own token on a clean shutdown, so restarts do not leave live
        tokens behind until their TTL ends. Best effort: Vault may be gone already. A token read
        from a file belongs to whoever wrote it (in development, root's) and is left alone."""
        if not self._own_token:
            return
        try:
            await self._run(self._logout, "logout")
        except VaultProblem as exc:
            log.info("could not revoke the operator's Vault token on shutdown: %s", exc)

    async def _run(self, fn: Callable[[], T], operation: str) -> T:
        try:
            return await threads.run_in(threads.VAULT, self._call, fn)
        except VaultProblem:
            metrics.vault_error(operation)
            raise

    async def with_client(self, fn: Callable[[hvac.Client], T]) -> T:
        """Runs ``fn`` with the logged-in client in a worker thread (for the transit signer)."""
        return await self._run(lambda: fn(self._client), "sign")

    # --- per job ----------------------------------------------------------------------------

    def _secret_exists(self, path: str) -> bool:
        metadata = kv2_metadata_path(path)
        if metadata is None:
            return True  # not KV v2: the init container reports a missing path itself
        try:
            response = self._client.adapter.get(f"/v1/{metadata}")
        except hvac.exceptions.InvalidPath:
            return False
        data = response.get("data") or {}
        current = (data.get("versions") or {}).get(str(data.get("current_version")), {})
        return not current.get("destroyed") and not current.get("deletion_time")

    def _grant(self, plan: VaultPlan, wrapped: str | None, login: bool) -> Grant:
        for path in plan.secret_paths:
            if not self._secret_exists(path):
                raise VaultProblem(
                    "SecretPathNotFound", f"secret {path} does not exist in Vault", transient=False
                )
        if plan.transit_mount and plan.data_key:
            transit = self._client.secrets.transit
            transit.create_key(plan.data_key, key_type="aes256-gcm96", mount_point=plan.transit_mount)
            if wrapped is None:
                response = transit.generate_data_key(
                    plan.data_key, key_type="wrapped", bits=256, mount_point=plan.transit_mount
                )
                wrapped = response["data"]["ciphertext"]
        if not login:
            self._revoke(plan.name)
            return Grant(None, None, plan.data_key, plan.transit_mount, wrapped)
        # The policy pins the wrapped keys, so it is written once they exist, and before the
        # role: a pod may log in as soon as the role exists, and is granted what the policy
        # says at each request.
        s = self.settings
        self._client.sys.create_or_update_acl_policy(plan.name, plan.policy_hcl(wrapped))
        self._client.adapter.post(
            f"/v1/auth/{s.vault_auth_mount}/role/{plan.name}", json=plan.role_parameters(s.vault_audience)
        )
        return Grant(plan.name, plan.name, plan.data_key, plan.transit_mount, wrapped)

    async def grant(self, plan: VaultPlan, wrapped_data_key: str | None, *, login: bool = True) -> Grant:
        """Creates or updates the job's transit key and, when ``login`` (its pods may run), its
        policy and role; without, removes them (idempotent). Keeps the wrapped data key it is
        given, so a job's checkpoints stay readable across restarts."""
        return await self._run(lambda: self._grant(plan, wrapped_data_key, login), "grant")

    def _revoke(self, name: str) -> None:
        with contextlib.suppress(hvac.exceptions.InvalidPath):
            self._client.adapter.delete(f"/v1/auth/{self.settings.vault_auth_mount}/role/{name}")
        self._client.sys.delete_acl_policy(name)

    async def revoke(self, name: str) -> None:
        """Deletes the job's role (no new logins) and its policy (tokens already issued lose
        every grant at once, as Vault evaluates policies by name on each request)."""
        await self._run(lambda: self._revoke(name), "revoke")

    def _shred(self, mount: str, key: str) -> None:
        transit = self._client.secrets.transit
        try:
            transit.update_key_configuration(key, deletion_allowed=True, mount_point=mount)
        except hvac.exceptions.InvalidPath:
            return
        except hvac.exceptions.InvalidRequest as exc:
            # Vault says "not found"; OpenBao "no existing key named ... could be found".
            if "not found" in str(exc) or "no existing key" in str(exc):
                return
            raise
        transit.delete_key(key, mount_point=mount)

    async def shred(self, mount: str, key: str) -> None:
        """Deletes the job's transit key: everything sealed under the data keys it wrapped
        becomes unreadable for good (crypto-shredding). Idempotent."""
        await self._run(lambda: self._shred(mount, key), "shred")

    def _revoked(self, name: str) -> bool:
        mount = self.settings.vault_auth_mount
        for path in (f"/v1/auth/{mount}/role/{name}", f"/v1/sys/policies/acl/{name}"):
            try:
                self._client.adapter.get(path)
            except hvac.exceptions.InvalidPath:
                continue
            return False
        return True

    async def revoked(self, name: str) -> bool:
        """Whether Vault answers 404 for the job's role and its policy."""
        return await self._run(lambda: self._revoked(name), "verify")

    def _shredded(self, mount: str, key: str) -> str | None:
        try:
            self._client.secrets.transit.decrypt_data(key, SHRED_PROOF_CIPHERTEXT, mount_point=mount)
        except hvac.exceptions.InvalidRequest as exc:
            if "encryption key not found" in str(exc):
                return "transit decrypt refused by Vault: encryption key not found"
            return None
        return None

    async def shredded(self, mount: str, key: str) -> str | None:
        """The proof that the key is gone (Vault's refusal to decrypt under it), or None while
        it exists. The fixed ciphertext is the only one the operator's policy lets it send."""
        return await self._run(lambda: self._shredded(mount, key), "verify")
