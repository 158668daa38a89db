"""ModelArtifacts after publication: their retention (deleted when spec.retention.keepFor has
passed since their creation, unless Approved and pinned), and the audit log's record of each
approval and revocation. Deadlines come from the artifact itself, so one that fell due while the
operator was down is deleted when it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import metrics
from .adapters.kube import ApiError, KubeClient
from .adapters.vault import VaultProblem
from .api.v1alpha1.scalars import parse_duration
from .audit import AuditError, AuditLog, Event, Subject
from .keys import OperatorKeys
from .receipts import receipt, sign_receipt
from .signing import SigningError

log = logging.getLogger(__name__)
RETRY_SECONDS = 30.0

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
Key = tuple[str, str]


def due_at(body: Mapping[str, Any]) -> datetime | None:
    """When the artifact falls due, or None while it is kept (Approved and pinned)."""
    spec = body.get("spec") or {}
    retention = spec.get("retention") or {}
    stage = (body.get("promotion") or {}).get("stage", "Candidate")
    if stage == "Approved" and retention.get("pinWhileApproved", True):
        return None
    created = datetime.strptime(body["metadata"]["creationTimestamp"], TIME_FORMAT).replace(tzinfo=UTC)
    return created + parse_duration(str(retention.get("keepFor", "8760h")))


def decisions(promotion: Mapping[str, Any]) -> list[tuple[Event, dict[str, Any]]]:
    """Every approval and the revocation an artifact's promotion records, as audit entries."""
    found = [(Event.APPROVAL, dict(a)) for a in promotion.get("approvals") or []]
    if promotion.get("revocation"):
        found.append((Event.REVOCATION, dict(promotion["revocation"])))
    return found


@dataclass
class ArtifactKeeper:
    kube: KubeClient
    keys: OperatorKeys
    audit: AuditLog
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _recorded: dict[str, int] = field(default_factory=dict)
    """Per artifact uid, how many of its decisions the audit log has from this process."""

    async def changed(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        await self._record_decisions(body)
        due = due_at(body)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if due is None:
            return
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(wait, lambda: loop.create_task(self._expire(dict(body))))
            return
        await self._expire(body)

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        timer = self._timers.pop((namespace, name), None)
        if timer is not None:
            timer.cancel()
        self._recorded.pop(uid or "", None)

    async def _record_decisions(self, body: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        found = decisions(body.get("promotion") or {})
        # A restarted operator starts with what the artifact already holds: those decisions
        # were recorded by the process that saw them happen.
        seen = self._recorded.setdefault(uid, len(found))
        for event, details in found[seen:]:
            await self.audit.record(event, Subject.of(body), details)
        self._recorded[uid] = len(found)

    async def _expire(self, body: Mapping[str, Any]) -> None:
        try:
            await self._delete(body)
        except (ApiError, OSError, TimeoutError, VaultProblem, SigningError, AuditError) as error:
            log.warning(
                "artifact %s/%s not deleted yet (%s); retrying",
                body["metadata"]["namespace"],
                body["metadata"]["name"],
                error,
            )
            metrics.receipt_failed()
            loop = asyncio.get_running_loop()
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            self._timers[key] = loop.call_later(RETRY_SECONDS, lambda: loop.create_task(self._expire(body)))

    async def _delete(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        await self.kube.delete("ModelArtifact", name, namespace)
        if await self.kube.get("ModelArtifact", name, namespace) is not None:
            return  # still finalizing; its deletion event brings it back
        keep = (body["spec"].get("retention") or {}).get("keepFor")
        unsigned = receipt(
            kind="ModelArtifact",
            name=name,
            uid=meta["uid"],
            digest=body["spec"]["digests"]["manifest"],
            deleted_at=datetime.now(UTC),
            policy=f"spec.retention.keepFor={keep}",
            verification="GET answered 404",
        )
        signed = sign_receipt(unsigned, await self.keys.signer())
        await self.audit.record(Event.DELETION, Subject.of(body), signed)
        metrics.deletion_done("ModelArtifact")
