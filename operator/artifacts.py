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

from pydantic import ValidationError

from . import metrics, signing, threads
from .adapters.kube import ApiError, KubeClient
from .adapters.vault import VaultProblem
from .api.v1alpha1 import ModelArtifact
from .api.v1alpha1.conditions import ArtifactConditionType as A
from .api.v1alpha1.conditions import VerifiedReason as V
from .api.v1alpha1.scalars import parse_duration
from .audit import AuditError, AuditLog, Event, Subject
from .keys import OperatorKeys
from .receipts import receipt, sign_receipt
from .signing import SigningError
from .status import Cond, merge_conditions

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


def key_check(body: Mapping[str, Any], signer_key_id: str, public_key_pem: bytes) -> tuple[V, list[str]]:
    """The artifact checked with the operator's key: its signature, the files it lists against
    what the bundle signs, and its provenance against the rest of its spec. Returns the Verified
    reason and what failed (nothing when it verifies)."""
    key_id = str(((body.get("spec") or {}).get("signature") or {}).get("keyID", ""))
    if key_id != signer_key_id:
        return V.KEY_UNKNOWN, [
            f"spec.signature.keyID {key_id or '(none)'} is not the operator's signing key {signer_key_id}"
        ]
    try:
        check = signing.check_artifact(ModelArtifact.model_validate(dict(body)), public_key_pem)
    except ValidationError as error:
        return V.SIGNATURE_INVALID, [f"the artifact does not parse: {error.error_count()} errors"]
    if check.signature:
        return V.SIGNATURE_INVALID, check.signature
    if check.provenance:
        return V.DIGEST_MISMATCH, check.provenance
    return V.SIGNATURE_VALID, []


def verified_status(
    body: Mapping[str, Any], signer_key_id: str, public_key_pem: bytes, now: datetime
) -> dict[str, Any]:
    """The artifact's status: its check with the operator's key (key_check)."""
    meta, old = body["metadata"], body.get("status") or {}
    reason, problems = key_check(body, signer_key_id, public_key_pem)
    message = "; ".join(problems)[:1024] or f"signed by {signer_key_id}; digests and provenance agree"
    verified = Cond(A.VERIFIED, not problems, reason, message)
    generation = int(meta.get("generation", 1))
    return {
        "phase": "Verified" if verified.status else "VerificationFailed",
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions") or [], [verified], generation, now),
        "verification": {
            "verified": verified.status,
            "verifiedAt": now.strftime(TIME_FORMAT),
            "message": verified.message,
        },
    }


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
        await self._verify(body)
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

    async def _verify(self, body: Mapping[str, Any]) -> None:
        """Writes status once per generation (a promotion bumps it, and is checked again)."""
        meta = body["metadata"]
        if (body.get("status") or {}).get("observedGeneration") == meta.get("generation"):
            return
        try:
            signer = await self.keys.signer()
            status = await threads.run_in(
                threads.SIGNING,
                verified_status,
                body,
                signer.key_id,
                signer.public_key_pem,
                datetime.now(UTC),
            )
            await self.kube.patch_status(
                "ModelArtifact", meta["name"], meta["namespace"], status, meta["resourceVersion"]
            )
        except (ApiError, OSError, TimeoutError, VaultProblem, SigningError) as error:
            # Conflict included: the newer version's event verifies again.
            log.warning("artifact %s/%s not verified yet: %s", meta["namespace"], meta["name"], error)

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
