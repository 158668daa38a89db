"""What the operator destroys in Vault when a job ends or is deleted: the objects named after
the job itself, whatever its status.vault says (others than the operator may write it)."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from sealtune import signing
from sealtune.api.v1alpha1.datadomain import Retention
from sealtune.audit import AuditLog
from sealtune.builders.vault import object_name
from sealtune.custody import FINALIZER, Custody
from sealtune.receipts import verify_receipt

NS = "team-a"
UID = "0a1b2c3d-0000-0000-0000-000000000001"
OWN = object_name(NS, "mine", UID)
OTHER = object_name("team-b", "theirs", "ffffffff-0000-0000-0000-000000000002")


class Vault:
    """Records what it is asked to destroy; everything asked for is gone at once."""

    def __init__(self) -> None:
        self.destroyed: list[tuple[str, ...]] = []

    async def revoke(self, name: str) -> None:
        self.destroyed.append(("role and policy", name))

    async def revoked(self, name: str) -> bool:
        return True

    async def shred(self, mount: str, key: str) -> None:
        self.destroyed.append(("key", mount, key))

    async def shredded(self, mount: str, key: str) -> str:
        return "transit decrypt refused by Vault: encryption key not found"


class Kube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def merge_patch(self, kind: str, name: str, namespace: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)


class Keys:
    def __init__(self) -> None:
        self.pem = signing.PemSigner(signing.new_private_key_pem())

    async def signer(self) -> signing.PemSigner:
        return self.pem


def custody() -> tuple[Custody, Vault, Kube, Keys]:
    vault, kube, keys = Vault(), Kube(), Keys()
    audit = AuditLog(None, stdout=io.StringIO())
    return Custody(kube, vault, keys, audit), vault, kube, keys  # type: ignore[arg-type]


# Another job's objects, as a status written by someone else would name them.
FORGED = {
    "role": OTHER,
    "policy": OTHER,
    "dataKey": OTHER,
    "transitMount": "transit",
    "wrappedDataKey": "vault:v1:eA==",
}


def body(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": "mine",
            "namespace": NS,
            "uid": UID,
            "resourceVersion": "7",
            "finalizers": [FINALIZER],
        },
        "status": status,
    }


def test_a_deleted_job_destroys_its_own_objects_not_those_its_status_names() -> None:
    care, vault, kube, _ = custody()
    asyncio.run(care.release(body(vault=FORGED), None, None))
    assert vault.destroyed == [("role and policy", OWN), ("key", "transit", OWN)]
    assert kube.patches[0]["metadata"]["finalizers"] == []


@pytest.mark.parametrize(
    ("recorded", "destroyed", "receipts"),
    [
        (
            FORGED,
            [("role and policy", OWN), ("key", "transit", OWN)],
            [("VaultRole", OWN), ("VaultPolicy", OWN), ("TransitKey", f"transit/{OWN}")],
        ),
        (
            {"role": OTHER, "policy": OTHER},
            [("role and policy", OWN)],
            [("VaultRole", OWN), ("VaultPolicy", OWN)],
        ),
        ({}, [], []),
    ],
    ids=["role and key", "role only", "none"],
)
def test_a_finished_job_destroys_its_own_objects_not_those_its_status_names(
    recorded: dict[str, str], destroyed: list[tuple[str, ...]], receipts: list[tuple[str, str]]
) -> None:
    care, vault, _, keys = custody()
    now = datetime(2025, 1, 2, tzinfo=UTC)
    status = {"phase": "Succeeded", "timestamps": {"finishedAt": "2025-01-01T00:00:00Z"}, "vault": recorded}
    settled, _ = asyncio.run(
        care.settle(body(**status), None, status, Retention(checkpoints="0s"), hold_copies=True, now=now)
    )
    assert vault.destroyed == destroyed
    signed = settled.get("deletionReceipts") or []
    assert [(r["kind"], r["name"]) for r in signed] == receipts
    assert all(verify_receipt(r, keys.pem.public_key_pem) for r in signed)
