"""The reconcile of one FineTuneJob: gather what is known, decide, apply the children, compute
status, write it only if it changed, and post one Event per condition that moved.

Level-triggered and idempotent: it may run any number of times, after a crash too, and always
converges on the same objects (deterministic names, server-side apply under one manager).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from . import builders, names
from .adapters.kube import ApiError, Conflict, KubeClient
from .api.v1alpha1 import DataDomain, FineTuneJob
from .builders.workload import indexed_job
from .observe import JobObservation, Observation, PodObservation
from .policy import Violation, domain_not_found, evaluate
from .settings import Settings
from .status import compute_status, transitions

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a FineTuneJob."""

TERMINAL_PHASES = ("Succeeded", "Failed")
MAX_BACKOFF_SECONDS = 300.0
SETTLE_SECONDS = 2.0
NEWS_WHEN_TRUE = ("PolicyAdmitted", "Running", "Succeeded", "Failed", "Suspended", "Published")


class Emit(Protocol):
    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclass
class Snapshot:
    """The in-memory views the reconcile reads; kopf keeps them current from its watches."""

    finetunejobs: Callable[[], Mapping[Key, Any]]
    batch_jobs: Callable[[], Mapping[Key, Any]]
    pods: Callable[[], Mapping[Key, Any]]
    domains: Callable[[], Mapping[str, Any]]
    namespaces: Callable[[], Mapping[str, Any]]


def _one(store: Any) -> Any:
    """The single value a kopf index holds under a key (indexes hold collections)."""
    for value in store or ():
        return value
    return None


def desired_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Controller:
    settings: Settings
    kube: KubeClient
    emit: Emit
    snapshot: Snapshot | None = None
    _running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _dirty: set[Key] = field(default_factory=set)
    _failures: dict[Key, int] = field(default_factory=dict)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _settling: set[Key] = field(default_factory=set)
    _written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Per job, the resourceVersion our last status write replaced and the object it returned:
    until the watch delivers that write, the index still holds the older version."""
    _applied: dict[Key, str] = field(default_factory=dict)
    """Hash of the companions last applied per job, so unchanged ones are not re-sent."""

    def trigger(self, key: Key) -> None:
        """Reconciles the job soon; triggers that arrive while it runs fold into one more run."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._run(key))

    def trigger_soon(self, key: Key) -> None:
        """For news about a job's pods or batch Job: waits a moment so a burst of such events
        (a pod scheduled, started, ready) folds into one reconcile and one status write."""
        if key in self._settling:
            return
        self._settling.add(key)

        def fire() -> None:
            self._settling.discard(key)
            self.trigger(key)

        asyncio.get_running_loop().call_later(SETTLE_SECONDS, fire)

    def trigger_later(self, key: Key, delay: float) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(delay, 0.0), self.trigger, key)

    def forget(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._applied.pop(key, None)
        self._written.pop(key, None)

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                try:
                    await self.reconcile(key)
                    self._failures.pop(key, None)
                except Conflict:
                    # Someone wrote the job since our view of it; the watch brings the news.
                    self.trigger_later(key, 1.0)
                except (ApiError, OSError, TimeoutError) as error:
                    failures = self._failures.get(key, 0) + 1
                    self._failures[key] = failures
                    delay = min(2.0**failures, MAX_BACKOFF_SECONDS)
                    log.warning("reconcile of %s/%s failed (%s); retrying in %.0f s", *key, error, delay)
                    self.trigger_later(key, delay)
                if key not in self._dirty:
                    break
        finally:
            self._running.pop(key, None)

    async def reconcile(self, key: Key) -> None:
        assert self.snapshot is not None, "the controller runs once kopf's indexes are bound"
        body = _one(self.snapshot.finetunejobs().get(key))
        if body is None:
            self.forget(key)
            return
        written = self._written.get(key)
        if written is not None and written[0] == body["metadata"]["resourceVersion"]:
            body = written[1]
        try:
            job = FineTuneJob.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as error:
            # The API server validated it against the same models; only skew gets here.
            log.error("FineTuneJob %s/%s does not parse: %s", *key, error.errors()[:3])
            return
        if body["metadata"].get("deletionTimestamp"):
            return  # going away: its children go with it, through their owner references
        old_status: dict[str, Any] = dict(body.get("status") or {})
        if old_status.get("phase") in TERMINAL_PHASES:
            await self._finished(key, job, body, old_status)
            return

        domain_body = _one(self.snapshot.domains().get(job.spec.domain_ref.name))
        violation: Violation | None
        if domain_body is None:
            violation, domain = domain_not_found(job), None
        else:
            domain = DataDomain.model_validate({k: v for k, v in domain_body.items() if k != "status"})
            labels = _one(self.snapshot.namespaces().get(key[0])) or {}
            violations = evaluate(job, domain, labels)
            violation = violations[0] if violations else None

        batch: JobObservation | None = _one(self.snapshot.batch_jobs().get(key))
        if batch is not None and batch.uid and batch_job_owner_mismatch(batch, body):
            batch = None
        pods = tuple(p for p in (self.snapshot.pods().get(key) or ()) if isinstance(p, PodObservation))
        if violation is None and domain is not None:
            await self._apply_children(key, job, domain, batch)
        elif batch is not None and not batch.suspended:
            # The domain no longer admits this job: stop its workers, keep everything else.
            await self.kube.merge_patch("Job", names.batch_job(key[1]), key[0], {"spec": {"suspend": True}})

        now = datetime.now(UTC)
        status = compute_status(job, old_status, violation, Observation(batch, pods), now)
        await self._write_status(key, body, old_status, status)

    async def _apply_children(
        self, key: Key, job: FineTuneJob, domain: DataDomain, batch: JobObservation | None
    ) -> None:
        """The companions (ServiceAccount, NetworkPolicy, ConfigMap, Service) at once, then the
        Job: no pod exists before its isolation. The Job carries the hash of its companions'
        desired state, so after a restart unchanged companions are not sent again."""
        companions = [
            child
            for child in builders.desired_children(job, domain, self.settings)
            if child["kind"] != "Job"
            and not (child["kind"] == "ServiceAccount" and job.spec.service_account_name)
        ]
        digest = desired_hash(companions)
        if digest not in (self._applied.get(key), batch.desired_hash if batch else None):
            await asyncio.gather(*(self.kube.apply(child) for child in companions))
            if batch is not None:
                annotations = {names.ANNOTATION_DESIRED_HASH: digest}
                await self.kube.merge_patch(
                    "Job", names.batch_job(key[1]), key[0], {"metadata": {"annotations": annotations}}
                )
        self._applied[key] = digest
        await self._apply_job(key, job, domain, batch, digest)

    async def _apply_job(
        self, key: Key, job: FineTuneJob, domain: DataDomain, batch: JobObservation | None, digest: str
    ) -> None:
        """Creates the Job once; afterwards only suspension changes (a Job's pod template is
        immutable, and a Kueue-managed Job's suspend belongs to Kueue)."""
        if batch is None:
            desired = indexed_job(job, domain, self.settings)
            desired["metadata"]["annotations"] = {names.ANNOTATION_DESIRED_HASH: digest}
            await self.kube.apply(desired)
            return
        if job.spec.scheduling.queue_name is None and batch.suspended != job.spec.scheduling.suspend:
            await self.kube.merge_patch(
                "Job", names.batch_job(key[1]), key[0], {"spec": {"suspend": job.spec.scheduling.suspend}}
            )

    async def _write_status(
        self, key: Key, body: Mapping[str, Any], old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        if new == old:
            return
        before = body["metadata"]["resourceVersion"]
        written = await self.kube.patch_status("FineTuneJob", key[1], key[0], new, before)
        self._written[key] = (before, written)
        for cond in transitions(old.get("conditions") or [], new.get("conditions") or []):
            if not is_newsworthy(cond):
                continue
            self.emit(
                body,
                type="Warning" if is_bad_news(cond) else "Normal",
                reason=cond["reason"],
                message=f"{cond['type']}={cond['status']}: {cond['message']}",
            )

    async def _finished(
        self, key: Key, job: FineTuneJob, body: Mapping[str, Any], status: dict[str, Any]
    ) -> None:
        """A finished job keeps its status; it is deleted once ttlSecondsAfterFinished passes,
        counted from the timestamp in its status, so downtime of the operator delays nothing."""
        ttl = job.spec.scheduling.ttl_seconds_after_finished
        finished_at = (status.get("timestamps") or {}).get("finishedAt")
        if ttl is None or finished_at is None:
            return
        due = datetime.strptime(finished_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) + timedelta(
            seconds=ttl
        )
        remaining = (due - datetime.now(UTC)).total_seconds()
        if remaining > 0:
            self.trigger_later(key, remaining)
            return
        await self.kube.delete("FineTuneJob", key[1], key[0])
        self.emit(
            body,
            type="Normal",
            reason="TTLExpired",
            message=f"deleted {ttl} s after it finished (spec.scheduling.ttlSecondsAfterFinished)",
        )


def is_newsworthy(cond: Mapping[str, Any]) -> bool:
    """Whether a transition gets an Event: milestones and bad news, not every intermediate
    step (each Event is an API write; conditions hold the full story)."""
    return (cond["status"] == "True" and cond["type"] in NEWS_WHEN_TRUE) or is_bad_news(cond)


def is_bad_news(cond: Mapping[str, Any]) -> bool:
    """Whether a condition's transition deserves a Warning Event."""
    if cond["type"] == "Failed":
        return bool(cond["status"] == "True")
    return (
        cond["type"] in ("PolicyAdmitted", "Scheduled")
        and cond["status"] == "False"
        and cond["reason"] != "Pending"
    )


def batch_job_owner_mismatch(batch: JobObservation, body: Mapping[str, Any]) -> bool:
    """A Job of the same name left from an earlier FineTuneJob of the same name is not ours."""
    return False if batch.owner_uid is None else batch.owner_uid != body["metadata"].get("uid")
