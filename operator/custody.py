"""A job's Vault objects over its life: granted before its Job exists, revoked when it ends,
its data key crypto-shredded when the domain's retention says so or when the job is deleted.

A finalizer is added before anything is made in Vault, so a job deleted while the operator is
down still gets its Vault objects removed when the operator returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import metrics
from .adapters.kube import KubeClient
from .adapters.vault import VaultAdmin, VaultProblem
from .api.v1alpha1 import DataDomain, FineTuneJob
from .api.v1alpha1.conditions import DataDeletedReason
from .api.v1alpha1.conditions import JobConditionType as T
from .api.v1alpha1.conditions import SecretsReadyReason as R
from .api.v1alpha1.datadomain import Retention
from .api.v1alpha1.scalars import WRAPPED_KEY_PATTERN, parse_duration
from .audit import AuditLog, Event, Subject
from .builders import vault as vault_builders
from .keys import OperatorKeys
from .names import Workload
from .receipts import receipt, sign_receipt
from .status import Cond

FINALIZER = "sealtune.dev/cleanup"
"""Held by every admitted job until its workload (in another namespace than the job, where
owner references cannot reach) and its Vault objects are gone."""
MAX_RECEIPTS = 64
RECHECK_SECONDS = 2.0
"""How soon a deletion that was sent but not yet visible is checked again."""
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
WAITING = "no Vault role while the job's pods may not run (suspended or queued); it is made when they may"


@dataclass(frozen=True)
class Secured:
    """The SecretsReady verdict of one reconcile, the status.vault it implies, and whether
    Vault trouble should bring the job back (with backoff)."""

    cond: Cond
    vault: dict[str, str] | None = None
    retry: bool = False
    waiting: bool = False
    """Everything but the role exists: its children may be made (suspended or queued), and no
    pod can log in."""

    @property
    def children(self) -> bool:
        """Whether the job's children may be made: what their config needs exists."""
        return self.cond.status or self.waiting


def _ts(value: datetime) -> str:
    return value.strftime(TIME_FORMAT)


def _parse(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


@dataclass(frozen=True)
class Due:
    """One kind of a finished job's data and when it falls due."""

    target: str
    """A ScheduledDeletion target: trainingCopies, vaultRole or dataKey."""
    at: datetime
    policy: str
    """The rule that makes it due, as its receipts record it."""


def vault_object_name(body: Mapping[str, Any]) -> str:
    """The name of the job's Vault role, policy and transit key, derived from the job itself:
    status.vault is writable by others than the operator, and a name read from it could point
    at another job's objects."""
    meta = body["metadata"]
    return vault_builders.object_name(meta["namespace"], meta["name"], meta["uid"])


def deletion_schedule(
    finished_at: datetime, retention: Retention, *, role: bool, data_key: bool
) -> list[Due]:
    """What a finished job leaves and when each goes: its Job (with its pods, their scratch
    volumes and logs) and its ConfigMap after retention.trainingCopies; its Vault role and
    policy (if it has them) at once (no pod may log in after the job); its data key (if any),
    which seals its checkpoints, after retention.checkpoints (crypto-shredding)."""
    copies = retention.training_copies
    schedule = [
        Due("trainingCopies", finished_at + parse_duration(copies), f"retention.trainingCopies={copies}")
    ]
    if role:
        schedule.append(Due("vaultRole", finished_at, "the job finished: its pods may not log in to Vault"))
    if data_key:
        keep = retention.checkpoints
        schedule.append(Due("dataKey", finished_at + parse_duration(keep), f"retention.checkpoints={keep}"))
    return schedule


@dataclass
class Custody:
    kube: KubeClient
    vault: VaultAdmin | None
    keys: OperatorKeys
    audit: AuditLog

    async def secure(
        self, job: FineTuneJob, domain: DataDomain, old_status: Mapping[str, Any], *, may_run: bool
    ) -> Secured:
        """Makes sure the job's data key exists before its Job does, and its policy and role
        exactly while its pods ``may_run``: not while it is suspended or queued."""
        plan = vault_builders.plan(job, domain)
        if plan is None:
            return Secured(
                Cond(
                    T.SECRETS_READY,
                    True,
                    R.NOT_NEEDED,
                    "the job declares no secrets and its data is not encrypted with Vault",
                )
            )
        recorded = dict(old_status.get("vault") or {})
        ready = _condition(old_status, T.SECRETS_READY) or {}
        # Made (or withheld) already: no Vault call on every reconcile of thousands of jobs.
        if may_run and ready.get("status") == "True" and recorded.get("role") == plan.name:
            return Secured(
                Cond(T.SECRETS_READY, True, R.VAULT_ROLE_READY, ready.get("message", "")), recorded
            )
        if (
            not may_run
            and ready.get("reason") == R.WAITING_TO_RUN
            and recorded.get("dataKey") == plan.data_key
        ):
            return Secured(Cond(T.SECRETS_READY, False, R.WAITING_TO_RUN, WAITING), recorded, waiting=True)
        if self.vault is None:
            return Secured(
                Cond(
                    T.SECRETS_READY,
                    False,
                    R.VAULT_NOT_CONFIGURED,
                    "the job needs Vault but the operator has no Vault address (set SEALTUNE_VAULT_ADDRESS)",
                )
            )
        wrapped = recorded.get("wrappedDataKey")
        if recorded.get("dataKey") != plan.data_key or not re.fullmatch(WRAPPED_KEY_PATTERN, wrapped or ""):
            # Not this job's key, or not ciphertext (the policy pins it): make a new one.
            wrapped = None
        try:
            grant = await self.vault.grant(plan, wrapped, login=may_run)
        except VaultProblem as problem:
            return Secured(Cond(T.SECRETS_READY, False, problem.reason, str(problem)), retry=True)
        if not may_run:
            return Secured(
                Cond(T.SECRETS_READY, False, R.WAITING_TO_RUN, WAITING), grant.status(), waiting=True
            )
        paths = len(plan.secret_paths)
        message = f"Vault role and policy {grant.role} grant {paths} secret path{'s' * (paths != 1)}"
        if grant.data_key:
            message += f" and the job's data key {grant.transit_mount}/{grant.data_key}"
        return Secured(Cond(T.SECRETS_READY, True, R.VAULT_ROLE_READY, message), grant.status())

    async def withdraw(self, body: Mapping[str, Any], old_status: Mapping[str, Any]) -> dict[str, str] | None:
        """A job whose domain's policy now refuses it loses its Vault role and policy (its data
        key stays: it may be admitted again); returns its status.vault, if it had one."""
        recorded = dict(old_status.get("vault") or {})
        if "role" not in recorded or self.vault is None:
            return recorded or None
        await self.vault.revoke(vault_object_name(body))
        return {k: v for k, v in recorded.items() if k not in ("role", "policy")}

    async def hold(self, body: Mapping[str, Any]) -> None:
        """The finalizer, before the job has anything in its workload namespace or in Vault."""
        if FINALIZER in (body["metadata"].get("finalizers") or []):
            return
        meta = body["metadata"]
        await self.kube.apply(
            {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "finalizers": [FINALIZER]},
            }
        )

    async def release(
        self, body: Mapping[str, Any], domain: DataDomain | None, workload: Workload | None
    ) -> None:
        """A job being deleted: its workload goes, its role and policy go, its data key is
        shredded, then the finalizer is removed. Raises VaultProblem (the job is retried) while
        Vault is away."""
        meta = body["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        if workload is not None:
            for kind, name in workload.children:
                await self.kube.delete(kind, name, workload.namespace)
        vault = dict((body.get("status") or {}).get("vault") or {})
        # Where the key lives; which key is derived (in _delete), so a wrong mount can only miss
        # this job's key, never reach another's.
        mount = vault.get("transitMount") or (
            domain.spec.encryption.vault_transit.mount
            if domain and domain.spec.encryption.vault_transit
            else None
        )
        if self.vault is None:
            if vault.get("role"):
                # Removing the finalizer now would orphan the job's grants in Vault.
                raise VaultProblem(
                    "VaultNotConfigured",
                    "the job has Vault objects and the operator no Vault",
                    transient=True,
                )
        else:
            now = datetime.now(UTC)
            gone = []
            schedule = deletion_schedule(now, Retention(checkpoints="0s"), role=True, data_key=bool(mount))
            for due in schedule[1:]:  # its training copies went with its workload, above
                done = await self._delete(
                    Due(due.target, now, "the FineTuneJob was deleted"), body, workload, mount, now
                )
                if done is None:
                    raise VaultProblem(
                        "VaultUnavailable", f"the job's {due.target} is not gone yet", transient=True
                    )
                gone += done
            await self._record(body, gone)
        rest = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        await self.kube.merge_patch(
            body["kind"],
            meta["name"],
            meta["namespace"],
            {"metadata": {"finalizers": rest, "resourceVersion": meta["resourceVersion"]}},
        )

    async def settle(
        self,
        body: Mapping[str, Any],
        workload: Workload | None,
        status: dict[str, Any],
        retention: Retention,
        *,
        hold_copies: bool,
        now: datetime,
    ) -> tuple[dict[str, Any], float | None]:
        """A finished job: does the deletions that fell due, each verified and recorded with a
        signed receipt (in status and in the audit log), and says in how many seconds the
        next one is due. ``hold_copies`` keeps the job's Job, whose pods hold its result,
        until publication is settled."""
        vault = status.get("vault") or {}
        finished_at = (status.get("timestamps") or {}).get("finishedAt")
        if not finished_at:
            return status, None
        known = {d["target"]: d for d in status.get("deletions") or []}
        deletions, receipts, next_due = [], [], None
        mount = vault.get("transitMount")
        schedule = deletion_schedule(
            _parse(finished_at), retention, role="role" in vault, data_key=bool(mount)
        )
        for due in schedule:
            entry = {"target": due.target, "dueAt": _ts(due.at), **known.pop(due.target, {})}
            deletions.append(entry)
            if "deletedAt" in entry:
                continue
            wait = (due.at - now).total_seconds()
            if wait > 0 or (due.target == "trainingCopies" and hold_copies):
                next_due = wait if next_due is None else min(next_due, max(wait, RECHECK_SECONDS))
                continue
            done = await self._delete(due, body, workload, mount, now)
            if done is None:  # deleted, not yet gone: checked again shortly
                next_due = RECHECK_SECONDS if next_due is None else min(next_due, RECHECK_SECONDS)
                continue
            receipts += done
            entry["deletedAt"] = _ts(now)
        status = {**status, "deletions": [*deletions, *known.values()]}
        if receipts:
            signed = await self._record(body, receipts)
            status["deletionReceipts"] = [*(status.get("deletionReceipts") or []), *signed][-MAX_RECEIPTS:]
        return _with_data_deleted(status, now), next_due

    async def _record(self, body: Mapping[str, Any], receipts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Signs the receipts and appends each to the audit log; returns them signed."""
        if not receipts:
            return []
        try:
            signer = await self.keys.signer()
            signed = [sign_receipt(r, signer) for r in receipts]
            for one in signed:
                subject = Subject(one["kind"], one["name"], body["metadata"]["namespace"], one.get("uid"))
                await self.audit.record(
                    Event.DELETION, subject, {**one, "finetuneJob": body["metadata"]["name"]}
                )
        except Exception:
            # The deletions stand; their receipts are made again on the retry (deleting twice is
            # harmless, and only then is deletedAt written).
            metrics.receipt_failed()
            raise
        for one in signed:
            metrics.deletion_done(one["kind"])
        return signed

    async def _delete(
        self,
        due: Due,
        body: Mapping[str, Any],
        workload: Workload | None,
        transit_mount: str | None,
        now: datetime,
    ) -> list[dict[str, Any]] | None:
        """Deletes one target and checks it is gone; its unsigned receipts, or None while a
        deleted object still exists. Vault objects are found by the name derived from the job."""

        def made(kind: str, what: str, verification: str, uid: str | None = None) -> dict[str, Any]:
            return receipt(
                kind=kind, name=what, uid=uid, deleted_at=now, policy=due.policy, verification=verification
            )

        if due.target == "trainingCopies":
            if workload is None:
                # Its domain and the namespace made for it are gone, and the copies with them.
                return [made("Namespace", "", "the domain's workload namespace no longer exists")]
            objects = [("Job", workload.batch_job), ("ConfigMap", workload.config_map)]
            remaining = []
            for kind, what in objects:
                await self.kube.delete(kind, what, workload.namespace)
                if await self.kube.get(kind, what, workload.namespace) is not None:
                    remaining.append(what)
            if remaining:
                return None
            verification = "GET answered 404"
            return [
                made(
                    "Job",
                    objects[0][1],
                    f"{verification}; its pods, their scratch volumes and logs went with it",
                ),
                made("ConfigMap", objects[1][1], verification),
            ]
        if self.vault is None:
            raise VaultProblem(
                "VaultNotConfigured", "the job's Vault objects need Vault to delete", transient=True
            )
        own = vault_object_name(body)
        if due.target == "vaultRole":
            await self.vault.revoke(own)
            if not await self.vault.revoked(own):
                return None
            verification = "Vault answered 404 for it"
            return [made("VaultRole", own, verification), made("VaultPolicy", own, verification)]
        assert transit_mount, "a data key is scheduled only with its mount"
        await self.vault.shred(transit_mount, own)
        proof = await self.vault.shredded(transit_mount, own)
        if proof is None:
            return None
        return [made("TransitKey", f"{transit_mount}/{own}", proof)]


def _with_data_deleted(status: dict[str, Any], now: datetime) -> dict[str, Any]:
    deletions = status.get("deletions") or []
    pending = [d["target"] for d in deletions if "deletedAt" not in d]
    cond = (
        {
            "status": "False",
            "reason": DataDeletedReason.DELETIONS_PENDING,
            "message": f"due later or in progress: {', '.join(pending)}",
        }
        if pending
        else {
            "status": "True",
            "reason": DataDeletedReason.DELETIONS_COMPLETE,
            "message": "every scheduled deletion is done and has a signed receipt",
        }
    )
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != T.DATA_DELETED]
    old = next((c for c in status.get("conditions") or [] if c.get("type") == T.DATA_DELETED), None)
    moved = old is None or old.get("status") != cond["status"]
    conditions.append(
        {
            "type": T.DATA_DELETED,
            **cond,
            "observedGeneration": (old or {}).get("observedGeneration", status.get("observedGeneration", 1)),
            "lastTransitionTime": _ts(now) if moved else old["lastTransitionTime"],  # type: ignore[index]
        }
    )
    # A revoked role also ends the job's SecretsReady.
    if "vaultRole" not in pending and any(d["target"] == "vaultRole" for d in deletions):
        conditions = [
            _revoked(c, now) if c.get("type") == T.SECRETS_READY and c.get("status") == "True" else c
            for c in conditions
        ]
    return {**status, "conditions": conditions}


def _revoked(cond: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        **cond,
        "status": "False",
        "reason": R.VAULT_ROLE_REVOKED,
        "message": "the job ended: its Vault role and policy were removed",
        "lastTransitionTime": _ts(now),
    }
