"""The init container of every trainer pod: logs in to Vault with the pod's projected,
audience-bound ServiceAccount token, writes the job's declared secrets and unwrapped data keys
as files (mode 0400) into the pod's memory-backed volume, then revokes its own token.

Nothing it reads is printed, logged or written anywhere else; errors name paths, never values.
Transient trouble (Vault unreachable, sealed, a 5xx) is retried with backoff for a bounded
time; a refusal (403) or a missing path ends the container at once with exit code 2, which the
Job's pod failure policy treats as permanent.

    python -m sealtune_trainer.vault_init --config /var/run/sealtune/config/vault.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sealtune_trainer.errors import ConfigRefused

FILE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SecretItem(_Model):
    path: str = Field(max_length=512)
    """Vault API path (KV v2: ``<mount>/data/<name>``; KV v1: ``<mount>/<name>``)."""
    key: str | None = None
    """Key within the secret; None writes the secret's whole data as JSON."""
    file: str = Field(pattern=FILE_NAME, max_length=253)


class WrappedKey(_Model):
    mount: str = Field(max_length=128)
    """Mount path of the transit engine."""
    key: str = Field(max_length=128)
    """Transit key that wrapped it."""
    ciphertext: str = Field(max_length=4096)
    file: str = Field(pattern=FILE_NAME, max_length=253)


class InitConfig(_Model):
    """What the operator tells the init container (paths and names, never a secret value)."""

    vault_address: str
    auth_mount: str = "kubernetes"
    role: str
    token_path: str
    secrets_dir: str
    secrets: list[SecretItem] = Field(default_factory=list)
    data_keys: list[WrappedKey] = Field(default_factory=list)
    retry_seconds: float = Field(120.0, ge=0)
    """How long transient errors are retried before the container gives up."""


class Transient(Exception):
    """Vault is unreachable, sealed or answered with a server error: worth retrying."""


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import hvac.exceptions
    import requests

    try:
        return fn(*args, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Transient(f"Vault unreachable ({type(exc).__name__})") from None
    except (
        hvac.exceptions.VaultDown,
        hvac.exceptions.InternalServerError,
        hvac.exceptions.BadGateway,
    ) as exc:
        raise Transient(f"Vault unavailable ({type(exc).__name__})") from None


def _write(directory: Path, name: str, data: bytes) -> None:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o400)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _secret_bytes(response: dict[str, Any], item: SecretItem) -> bytes:
    data = response.get("data") or {}
    # KV v2 nests the secret's own data one level down, with its version metadata beside it.
    if isinstance(data.get("data"), dict) and "metadata" in data:
        data = data["data"]
    if item.key is None:
        return json.dumps(data, sort_keys=True).encode()
    if item.key not in data:
        raise ConfigRefused(f"secret {item.path} has no key {item.key!r}", reason="SecretKeyNotFound")
    value = data[item.key]
    return (value if isinstance(value, str) else json.dumps(value)).encode()


def deliver(config: InitConfig) -> list[str]:
    """Does the whole job once; returns the names of the files written."""
    import hvac
    import hvac.exceptions

    client = hvac.Client(url=config.vault_address, timeout=10)
    jwt = Path(config.token_path).read_text().strip()
    try:
        _call(client.auth.kubernetes.login, config.role, jwt, mount_point=config.auth_mount)
    except hvac.exceptions.Forbidden:
        raise ConfigRefused(
            f"Vault refused the login to role {config.role}", reason="VaultLoginRefused"
        ) from None
    except hvac.exceptions.InvalidRequest:
        # No such role yet: the operator makes it only once the pods may run, and a queued job's
        # pods start the moment Kueue admits it, seconds before the operator sees that.
        raise Transient(f"Vault has no role {config.role} yet") from None
    directory = Path(config.secrets_dir)
    written = []
    try:
        for item in config.secrets:
            try:
                response = _call(client.adapter.get, f"/v1/{item.path}")
            except hvac.exceptions.InvalidPath:
                raise ConfigRefused(
                    f"secret {item.path} does not exist", reason="SecretPathNotFound"
                ) from None
            except hvac.exceptions.Forbidden:
                raise ConfigRefused(
                    f"Vault refused reading {item.path}", reason="SecretPathRefused"
                ) from None
            _write(directory, item.file, _secret_bytes(response, item))
            written.append(item.file)
        for wrapped in config.data_keys:
            try:
                response = _call(
                    client.secrets.transit.decrypt_data,
                    wrapped.key,
                    wrapped.ciphertext,
                    mount_point=wrapped.mount,
                )
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
                raise ConfigRefused(
                    f"Vault refused unwrapping the key under {wrapped.mount}/{wrapped.key}",
                    reason="DataKeyRefused",
                ) from None
            # transit returns the plaintext base64-encoded; the trainer reads that form directly.
            plaintext = response["data"]["plaintext"]
            base64.b64decode(plaintext, validate=True)
            _write(directory, wrapped.file, plaintext.encode())
            written.append(wrapped.file)
    finally:
        # The token has done its work: nothing in the pod needs Vault after this.
        with contextlib.suppress(Transient, hvac.exceptions.VaultError):
            _call(client.auth.token.revoke_self)
    return written


def run(config: InitConfig) -> int:
    deadline = time.monotonic() + config.retry_seconds
    delay = 1.0
    while True:
        try:
            written = deliver(config)
        except Transient as exc:
            if time.monotonic() + delay > deadline:
                print(f"sealtune vault-init: giving up: {exc}", file=sys.stderr)
                return 1
            print(f"sealtune vault-init: {exc}; retrying in {delay:.0f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        except ConfigRefused as exc:
            print(f"sealtune vault-init: {exc.reason}: {exc}", file=sys.stderr)
            return 2
        print(f"sealtune vault-init: wrote {len(written)} files: {', '.join(written)}", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sealtune_trainer.vault_init", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    config = InitConfig.model_validate_json(args.config.read_bytes())
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
