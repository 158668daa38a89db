"""The reconcile of one FineTuneJob: gather what is known, decide, apply the children, compute
status, write it only if it changed, and post one Event per condition that moved.

Level-triggered and idempotent: it may run any number of times, after a crash too, and always
converges on the same objects (deterministic names; a create that finds its object there
applies instead; server-side apply under one manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from . import builders, metrics, names, workspaces
from .adapters.kube import ApiError, Conflict, KubeClient, Superseded
from .adapters.vault import VaultProblem
from .api.v1alpha1 import DataDomain, FineTuneJob
from .api.v1alpha1.conditions import JobConditionType as T
from .api.v1alpha1.conditions import PublishedReason
from .api.v1alpha1.datadomain import Retention
from .audit import AuditError, AuditLog, Event, Subject
from .builders.meta import domain_namespace, workload_of
from .builders.workload import indexed_job
from .custody import Custody, Secured
from .names import LABEL_WORKLOAD_OF, Workload, workload_label_value
from .observe import JobObservation, Observation, PodObservation, QueueObservation, result_pod
from .policy import Violation, domain_not_found, evaluate, foreign_job, workload_namespace_conflict
from .progress import ProgressReader, trainer_metrics_url, world_size
from .publication import Publisher
from .settings import Settings
from .signing import SigningError
from .status import Cond, compute_status, merge_conditions, parse_result, transitions, workload_status

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a FineTuneJob."""

TERMINAL_PHASES = ("Succeeded", "Failed")
MAX_BACKOFF_SECONDS = 300.0
PERMANENT_API_STATUSES = (400, 422)
"""Refusals of a request as malformed or invalid: the same request never succeeds."""
VAULT_MAX_BACKOFF_SECONDS = 30.0
"""Jobs waiting for Vault retry at least this often: they start soon after it returns."""
SETTLE_SECONDS = 2.0
PERMANENT_REFUSALS = ("ResultInvalid", "ArtifactNameTaken")
"""Published reasons no retry changes: the job is not signed, and says why."""
NEWS_WHEN_TRUE = ("PolicyAdmitted", "Running", "Succeeded", "Failed", "Suspended", "Published")


class Emit(Protocol):
    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclass
class Snapshot:
    """The in-memory views the reconcile reads, kept current by the operator's informers (jobs,
    batch Jobs, pods) and kopf's indexes (domains, namespaces)."""

    finetunejobs: Callable[[], Mapping[Key, Any]]
    """(namespace, name) -> Packed FineTuneJobs."""
    batch_jobs: Callable[[], Mapping[Key, Any]]
    pods: Callable[[], Mapping[Key, Any]]
    domains: Callable[[], Mapping[str, Any]]
    namespaces: Callable[[], Mapping[str, Any]]
    queues: Callable[[], Mapping[Key, Any]] = dict
    """Kueue's Workloads (where Kueue is installed; empty otherwise)."""


def _one(store: Any) -> Any:
    """The single value a view holds under a key (informers and kopf's indexes hold collections)."""
    for value in store or ():
        return value
    return None


SLIM_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "annotations",
    "creationTimestamp",
    "deletionTimestamp",
    "finalizers",
)


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconcile reads of one of our objects: no managedFields, no kopf internals."""
    metadata = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {k: metadata[k] for k in SLIM_METADATA if k in metadata},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


@dataclass(frozen=True, slots=True)
class Packed:
    """A FineTuneJob as the informer keeps it between reconciles: its slim body as compact JSON.
    Parsed, a job's body costs about 11 KB of Python objects; as JSON about 2 KB, and thousands
    of jobs wait in the informer while only the few being reconciled need theirs parsed."""

    text: bytes
    domain: str
    """spec.domainRef.name, to find a domain's jobs without parsing them all."""
    version: str
    """metadata.resourceVersion, to know the echo of our own write without parsing it."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Packed:
        kept = slim(body)
        domain = (kept["spec"].get("domainRef") or {}).get("name", "")
        version = kept["metadata"].get("resourceVersion", "")
        return cls(json.dumps(kept, separators=(",", ":")).encode(), domain, version)

    def body(self) -> dict[str, Any]:
        return json.loads(self.text)  # type: ignore[no-any-return]


def _body(store: Any) -> dict[str, Any] | None:
    """The body of the job an index store holds, if any."""
    packed = _one(store)
    return packed.body() if packed is not None else None


def reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a status write, its Events and its audit entries need of the job."""
    metadata = body["metadata"]
    kept = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {k: metadata[k] for k in kept if k in metadata},
    }


def desired_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Controller:
    settings: Settings
    kube: KubeClient
    emit: Emit
    custody: Custody
    publisher: Publisher
    audit: AuditLog
    snapshot: Snapshot | None = None
    _running: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _dirty: set[Key] = field(default_factory=set)
    _failures: dict[Key, int] = field(default_factory=dict)
    _vault_failures: dict[Key, int] = field(default_factory=dict)
    progress: ProgressReader = field(default_factory=ProgressReader)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _settling: set[Key] = field(default_factory=set)
    _written: dict[Key, tuple[str, Packed]] = field(default_factory=dict)
    """Per job, the resourceVersion our last status write replaced and the object it returned:
    until the watch delivers that write, the informer still holds the older version."""
    _applied: dict[Key, tuple[tuple[Any, ...], str]] = field(default_factory=dict)
    """Per job, what its companions were built from and the hash of those last applied, so
    unchanged ones are neither rebuilt nor re-sent."""
    _overtaken: dict[Key, dict[str, Any]] = field(default_factory=dict)
    """Per job, the status of a write that news overtook while it waited its turn, unsent. The
    next reconcile decides from it rather than from the stored status, so what it recorded first
    (admittedAt, a condition's transition time, the Vault data key) is what goes out."""
    _namespaces_made: set[str] = field(default_factory=set)
    """Workload namespaces this process made: until the watch shows one, it is not made again."""
    _made: dict[Key, str] = field(default_factory=dict)
    """The uid of each batch Job this process created: until the watch shows it, it is not
    made again, and it is the job's."""
    _domains: dict[str, tuple[str, DataDomain]] = field(default_factory=dict)
    """Parsed DataDomains by name, with the resourceVersion they were parsed from."""
    _closed: bool = False
    _context: contextvars.Context | None = None
    _workers: asyncio.Semaphore = field(init=False)
    _unapplied: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._workers = asyncio.Semaphore(self.settings.max_concurrent_applies)
        self._unapplied = asyncio.Semaphore(self.settings.max_concurrent_applies)
        self.progress.on_moved = self.trigger

    def bind(self, snapshot: Snapshot) -> None:
        """Gives the controller its views, from inside a kopf handler. Reconciles then run in
        that handler's context, where kopf.event finds its queue, whatever triggers them: the
        informers' callbacks run outside kopf's."""
        self.snapshot = snapshot
        self._context = contextvars.copy_context()

    def is_own_write(self, key: Key, resource_version: str) -> bool:
        """Whether a watch event only delivers our own last status write: nothing to do then,
        as the reconcile that wrote it saw everything that led to it. The informer now holds the
        write, so the copy kept for the meantime goes."""
        written = self._written.get(key)
        if written is None or written[1].version != resource_version:
            return False
        del self._written[key]
        return True

    def batch_job_gone(self, key: Key) -> None:
        self._made.pop(key, None)

    def trigger(self, key: Key) -> None:
        """Reconciles the job soon; triggers that arrive while it runs fold into one more run.
        Before kopf's first event binds the snapshot there is nothing to read, and none is
        needed: kopf's listing of FineTuneJobs, which binds it, triggers every job."""
        if self._closed or self.snapshot is None:
            return
        if key in self._running:
            self._dirty.add(key)
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._run(key), context=self._context)

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
        self._vault_failures.pop(key, None)
        self.progress.forget(key)
        self._applied.pop(key, None)
        self._made.pop(key, None)
        self._written.pop(key, None)
        self._overtaken.pop(key, None)

    async def close(self) -> None:
        """Stops every reconcile, timer and progress reader, before the clients they use close."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.progress.close()
        await self.kube.close()

    async def _run(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                try:
                    with metrics.reconcile_timer("FineTuneJob"):
                        await self.reconcile(key)
                    self._failures.pop(key, None)
                except Conflict:
                    # Someone wrote the job since our view of it; the watch brings the news.
                    self.trigger_later(key, 1.0)
                except (ApiError, OSError, TimeoutError, VaultProblem, SigningError, AuditError) as error:
                    if isinstance(error, ApiError) and error.status in PERMANENT_API_STATUSES:
                        self._refused(key, error)
                    else:
                        delay = self._back_off(key)
                        log.warning("reconcile of %s/%s failed (%s); retrying in %.0f s", *key, error, delay)
                except Exception:
                    # A bug or an answer nobody foresaw: say so loudly, and retry with backoff
                    # rather than let the job's reconcile die unnoticed.
                    delay = self._back_off(key)
                    log.exception("reconcile of %s/%s failed unexpectedly; retrying in %.0f s", *key, delay)
                if key not in self._dirty:
                    break
        finally:
            self._running.pop(key, None)

    def _admission(self, key: Key) -> contextlib.AbstractAsyncContextManager[Any]:
        """Where a job this process has not yet applied waits its turn, before its reconcile
        parses anything: a burst of thousands of new jobs (or every job, after a restart) then
        waits as keys, not as parsed jobs. Jobs already applied, most reconciles of running
        ones, pass at once."""
        return self._unapplied if key not in self._applied else contextlib.nullcontext()

    async def reconcile(self, key: Key) -> None:
        """Decides, in its turn, then writes the status it decided on. In a burst that write
        waits behind other jobs' children (adapters/limiter.py): it holds no turn meanwhile, and
        only a reference to the job and its old and new status, not the parsed job."""
        async with self._admission(key):
            report = await self._decide(key)
        if report is not None:
            await self._write_status(key, *report, may_give_way=True)

    def _back_off(
        self, key: Key, failures: dict[Key, int] | None = None, cap: float = MAX_BACKOFF_SECONDS
    ) -> float:
        """Schedules the job's next try after a failure counted in ``failures`` (the reconcile's
        own by default), doubling up to ``cap``; returns the delay."""
        counts = self._failures if failures is None else failures
        counts[key] = counts.get(key, 0) + 1
        delay = min(2.0 ** counts[key], cap)
        self.trigger_later(key, delay)
        return delay

    def _refused(self, key: Key, error: ApiError) -> None:
        """The API server refused what the reconcile sent as invalid: retrying the same request
        cannot help. Say so once, as a Warning Event, and wait for the job or its domain to
        change (their watch events bring the job back)."""
        self._failures.pop(key, None)
        log.error("reconcile of %s/%s refused by the API server; waiting for a change: %s", *key, error)
        body = _body(self.snapshot.finetunejobs().get(key)) if self.snapshot else None
        if body is not None:
            self.emit(body, type="Warning", reason="ReconcileRefused", message=str(error))

    async def _decide(self, key: Key) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        """Applies what the job needs; returns the status write left to make (the job's
        reference, its old and its new status), if any."""
        assert self.snapshot is not None, "the controller runs once its views are bound"
        body = _body(self.snapshot.finetunejobs().get(key))
        if body is None:
            self.forget(key)
            return None
        written = self._written.get(key)
        if written is not None:
            if written[0] == body["metadata"]["resourceVersion"]:
                body = written[1].body()
            else:
                del self._written[key]  # the watch has delivered our write (or something newer)
        try:
            job = FineTuneJob.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as error:
            # The API server validated it against the same models; only skew gets here.
            log.error("FineTuneJob %s/%s does not parse: %s", *key, error.errors()[:3])
            return None
        domain = self._domain(job.spec.domain_ref.name)
        workload = self._workload(job, domain)
        if body["metadata"].get("deletionTimestamp"):
            # Going away: its children live in another namespace, out of reach of owner
            # references, and its Vault objects outside Kubernetes: the finalizer's cleanup.
            await self.custody.release(body, domain, workload)
            return None
        old_status: dict[str, Any] = dict(body.get("status") or {})
        if old_status.get("phase") in TERMINAL_PHASES:
            await self._finished(key, job, body, old_status, domain=domain, workload=workload)
            return None
        basis = self._overtaken.get(key, old_status)

        violation = self._violation(key, job, domain)
        seen = self._workload_seen(key, body, workload)
        batch, pods = seen.job, seen.pods
        if batch is not None and workload is not None and not self._made_here(key, batch, basis):
            # Not the operator's: never adopted, never changed, its pods' results never read.
            violation = violation or foreign_job(workload)
            seen = Observation()
            batch, pods = None, ()
        secured, vault = None, None
        if violation is None and domain is not None and workload is not None:
            secured = await self._admitted(key, job, domain, body, old_status=basis, batch=batch)
            vault = secured.vault
        else:
            # The domain no longer admits this job: stop its workers and take its Vault role;
            # keep everything else.
            if batch is not None and workload is not None and not batch.suspended:
                patch = {"spec": {"suspend": True}}
                await self.kube.merge_patch("Job", workload.batch_job, workload.namespace, patch)
            vault = await self.custody.withdraw(body, basis)

        now = datetime.now(UTC)
        status = compute_status(job, basis, violation, seen, now, secrets=secured.cond if secured else None)
        if vault is not None:
            status["vault"] = vault
        if workload is not None:
            status["workload"] = workload_status(workload, batch.uid if batch else None, basis)
        self._with_progress(key, job, status, pods)
        return reference(body), old_status, status

    def _violation(self, key: Key, job: FineTuneJob, domain: DataDomain | None) -> Violation | None:
        """The first reason the domain refuses the job, if any."""
        assert self.snapshot is not None
        if domain is None:
            return domain_not_found(job)
        labels = _one(self.snapshot.namespaces().get(key[0])) or {}
        violations = evaluate(job, domain, labels)
        return violations[0] if violations else self._namespace_conflict(domain)

    def _made_here(self, key: Key, batch: JobObservation, status: Mapping[str, Any]) -> bool:
        """Whether the operator created this batch Job: the uid its create returned (or its
        status recorded), or, after a crash between the two, its own field manager among the
        Job's writers. The workload namespace's admission policy lets no other identity create
        Jobs there; this keeps a Job made past it (by an admin, or with the policy unbound)
        from being adopted."""
        recorded = self._made.get(key) or (status.get("workload") or {}).get("batchJobUID")
        return batch.uid == recorded or self.settings.field_manager in batch.managers

    def _workload(self, job: FineTuneJob, domain: DataDomain | None) -> Workload | None:
        """Where the job's workload lives: its domain's workload namespace. With the domain
        gone, the namespace that sealtune made for a domain of that name, if any."""
        if domain is not None:
            return workload_of(job, domain)
        assert self.snapshot is not None
        name = job.spec.domain_ref.name
        for namespace, store in self.snapshot.namespaces().items():
            if (_one(store) or {}).get(LABEL_WORKLOAD_OF) == workload_label_value(name):
                meta = job.metadata
                return Workload.of(meta["name"], meta.get("uid", ""), meta["namespace"], namespace)
        return None

    def _namespace_conflict(self, domain: DataDomain) -> Violation | None:
        """A workload namespace that exists but that sealtune did not make for this domain is
        never used: whoever made it may hold rights in it."""
        assert self.snapshot is not None
        store = self.snapshot.namespaces().get(domain_namespace(domain))
        if store is None:
            return None
        if workspaces.is_domains(_one(store) or {}, domain):
            return None
        return workload_namespace_conflict(domain, domain_namespace(domain))

    def _workload_seen(self, key: Key, body: Mapping[str, Any], workload: Workload | None) -> Observation:
        """The job's batch Job, pods and Kueue Workload: only those in its workload namespace
        that carry its uid count (anyone may label an object of their own namespace as a job's
        worker), and only the Workload of its batch Job."""
        assert self.snapshot is not None
        if workload is None:
            return Observation()
        uid = body["metadata"].get("uid")

        def ours(seen: JobObservation | PodObservation | QueueObservation) -> bool:
            return seen.namespace == workload.namespace and seen.job_uid == uid

        batch = next((b for b in self.snapshot.batch_jobs().get(key) or () if ours(b)), None)
        pods = tuple(p for p in self.snapshot.pods().get(key) or () if ours(p))
        queue = next(
            (
                q
                for q in self.snapshot.queues().get(key) or ()
                if ours(q) and batch is not None and q.owner_uid == batch.uid
            ),
            None,
        )
        return Observation(batch, pods, queue)

    async def _admitted(
        self,
        key: Key,
        job: FineTuneJob,
        domain: DataDomain,
        body: Mapping[str, Any],
        *,
        old_status: Mapping[str, Any],
        batch: JobObservation | None,
    ) -> Secured:
        """An admitted job: its finalizer and workload namespace first, then its Vault objects,
        then its children; while Vault cannot help, no child is made and the job is retried
        with backoff."""
        await self.custody.hold(body)
        if batch is None:
            await self._ensure_namespace(domain)
        scheduling = job.spec.scheduling
        # Kueue holds a queued job by suspending its batch Job: until Kueue lets it go, no pod
        # of it runs, and no Vault role exists for one.
        queued = scheduling.queue_name is not None and (batch is None or batch.suspended)
        secured = await self.custody.secure(
            job, domain, old_status, may_run=not scheduling.suspend and not queued
        )
        if secured.children:
            wrapped = (secured.vault or {}).get("wrappedDataKey")
            await self._apply_children(key, job, domain, batch, wrapped)
            self._vault_failures.pop(key, None)
        elif secured.retry:
            self._back_off(key, self._vault_failures, VAULT_MAX_BACKOFF_SECONDS)
        return secured

    def _with_progress(
        self, key: Key, job: FineTuneJob, status: dict[str, Any], pods: tuple[PodObservation, ...]
    ) -> None:
        """A running job's status carries its trainer's progress as last read; a succeeded
        job's shows it complete (the last read may predate the last steps)."""
        if status["phase"] != "Running":
            self.progress.unfollow(key)
            done = status.get("progress")
            if status["phase"] == "Succeeded" and done:
                result = status.get("result") or {}
                steps = result.get("steps") or done.get("totalSteps") or done.get("step", 0)
                final = {"step": steps, "totalSteps": steps, "percent": 100, "etaSeconds": 0}
                if result.get("trainLoss") is not None:
                    final["loss"] = result["trainLoss"]
                status["progress"] = {**done, **final}
            return
        # Read in the background, at the reader's bounded rate; a reconcile follows when the
        # progress moved. A slow or silent trainer never holds up a reconcile.
        url = trainer_metrics_url(pods, self.settings.metrics_port)
        if url is None:
            self.progress.unfollow(key)
        else:
            self.progress.follow(key, url, world_size(job))
        current = self.progress.last(key, world_size(job))
        if current is not None:
            status["progress"] = current

    def _domain(self, name: str) -> DataDomain | None:
        assert self.snapshot is not None
        body = _one(self.snapshot.domains().get(name))
        if body is None:
            self._domains.pop(name, None)
            return None
        version = body["metadata"]["resourceVersion"]
        cached = self._domains.get(name)
        if cached is None or cached[0] != version:
            # Many jobs share a domain: parse each version once, not once per reconcile.
            domain = DataDomain.model_validate({k: v for k, v in body.items() if k != "status"})
            cached = self._domains[name] = (version, domain)
        return cached[1]

    def _domain_version(self, domain: DataDomain) -> str | None:
        """The resourceVersion ``domain`` was parsed from."""
        cached = self._domains.get(domain.metadata["name"])
        return cached[0] if cached is not None and cached[1] is domain else None

    async def domain_changed(self, body: Mapping[str, Any]) -> None:
        """A DataDomain appeared or changed: its workload namespace is made (or found not to be
        the domain's), and its status says which. Nothing is sent when nothing changed."""
        if body["metadata"].get("deletionTimestamp"):
            return
        try:
            domain = DataDomain.model_validate({k: v for k, v in body.items() if k != "status"})
            conflict = self._namespace_conflict(domain)
            if conflict is None:
                await self._ensure_namespace(domain)
            old = dict(body.get("status") or {})
            new = workspaces.domain_status(
                domain, old, conflict is None, self._jobs_using(domain.metadata["name"]), datetime.now(UTC)
            )
            if new != old:
                name, version = domain.metadata["name"], body["metadata"]["resourceVersion"]
                await self.kube.patch_status("DataDomain", name, None, new, version)
        except (ValidationError, ApiError, OSError, TimeoutError) as error:
            # Its jobs make the namespace when they need it; the status waits for the next event.
            log.warning("DataDomain %s: %s", body["metadata"]["name"], error)

    def _jobs_using(self, name: str) -> int:
        assert self.snapshot is not None
        return sum(
            1 for store in list(self.snapshot.finetunejobs().values()) for job in store if job.domain == name
        )

    async def _ensure_namespace(self, domain: DataDomain) -> None:
        """Makes the domain's workload namespace once, with its default-deny policy and the
        bindings of the admission policies that guard it. A namespace someone else made in the
        meantime is never taken over: the job waits, and its next reconcile refuses it."""
        name = domain_namespace(domain)
        if name in self._namespaces_made:
            return
        if not await workspaces.ensure(self.kube, domain):
            # Made by someone else since the check: the next reconcile refuses the job.
            raise Conflict(409, {"message": f"namespace {name} is not the domain's", "reason": "Conflict"})
        self._namespaces_made.add(name)

    async def _apply_children(
        self,
        key: Key,
        job: FineTuneJob,
        domain: DataDomain,
        batch: JobObservation | None,
        wrapped: str | None,
    ) -> None:
        """The companions (ServiceAccount, NetworkPolicy, ConfigMap, Service) at once, then the
        Job: no pod exists before its isolation. The Job carries the hash of its companions'
        desired state, so after a restart unchanged companions are not sent again. Until the job,
        its domain or its data key changes, nothing is even rebuilt: most reconciles of a running
        job follow its pods."""
        meta, workload = job.metadata, workload_of(job, domain)
        inputs = (meta.get("uid"), meta.get("generation"), self._domain_version(domain), wrapped)
        applied = self._applied.get(key)
        if applied is None or applied[0] != inputs:
            # Building and sending children is what a burst of new jobs holds in memory: only
            # so many at once. A running job's reconcile, with nothing to rebuild, never waits.
            async with self._workers:
                companions = [
                    child
                    for child in builders.desired_children(job, domain, self.settings, wrapped)
                    if child["kind"] != "Job"
                ]
                digest = desired_hash(companions)
                if digest not in (applied and applied[1], batch.desired_hash if batch else None):
                    # Not applied by this process and no batch Job yet: a new job, most likely,
                    # whose children are cheaper created than applied (adapters/kube.py).
                    send = self.kube.create_or_apply if applied is None and batch is None else self.kube.apply
                    await asyncio.gather(*(send(child) for child in companions))
                    if batch is not None:
                        annotations = {names.ANNOTATION_DESIRED_HASH: digest}
                        patch = {"metadata": {"annotations": annotations}}
                        await self.kube.merge_patch("Job", workload.batch_job, workload.namespace, patch)
            applied = self._applied[key] = (inputs, digest)
        await self._apply_job(key, job, domain, batch, applied[1])

    async def _apply_job(
        self, key: Key, job: FineTuneJob, domain: DataDomain, batch: JobObservation | None, digest: str
    ) -> None:
        """Creates the Job once; afterwards only suspension changes (a Job's pod template is
        immutable, and a Kueue-managed Job's suspend belongs to Kueue)."""
        if batch is None:
            if key in self._made:
                return  # made by us moments ago; the watch has not shown it yet
            async with self._workers:
                desired = indexed_job(job, domain, self.settings)
                desired["metadata"]["annotations"] = {names.ANNOTATION_DESIRED_HASH: digest}
                try:
                    created = await self.kube.create(desired)
                except Conflict as error:
                    if error.reason != "AlreadyExists":
                        raise
                    return  # never adopted: the next reconcile sees whose it is
            self._made[key] = created["metadata"]["uid"]
            return
        suspend = job.spec.scheduling.suspend
        if job.spec.scheduling.queue_name is None and batch.suspended != suspend:
            workload = workload_of(job, domain)
            await self.kube.merge_patch(
                "Job", workload.batch_job, workload.namespace, {"spec": {"suspend": suspend}}
            )

    async def _write_status(
        self,
        key: Key,
        body: Mapping[str, Any],
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        may_give_way: bool = False,
    ) -> None:
        """Writes ``new`` over ``old``. A write that ``may_give_way`` (one the next reconcile
        decides again from it) is dropped if news about the job came while it waited its turn."""
        if new == old:
            self._overtaken.pop(key, None)
            return
        before = body["metadata"]["resourceVersion"]
        try:
            written = await self.kube.patch_status(
                "FineTuneJob",
                key[1],
                key[0],
                new,
                before,
                superseded=(lambda: key in self._dirty) if may_give_way else None,
            )
        except Superseded:
            self._overtaken[key] = new  # the reconcile that follows (the key is dirty) decides from it
            return
        self._overtaken.pop(key, None)
        self._written[key] = (before, Packed.of(written))
        if new.get("phase") != old.get("phase"):
            # A job's phase decides what the reconcile does (a finished job publishes and
            # keeps its deletion schedule); the echo of this write triggers nothing, so go on.
            self._dirty.add(key)
        metrics.observe_status(body, old, new)
        for cond in transitions(old.get("conditions") or [], new.get("conditions") or []):
            await self._audit(body, cond, new)
            if not is_newsworthy(cond):
                continue
            self.emit(
                body,
                type="Warning" if is_bad_news(cond) else "Normal",
                reason=cond["reason"],
                message=f"{cond['type']}={cond['status']}: {cond['message']}",
            )

    async def _audit(
        self, body: Mapping[str, Any], cond: Mapping[str, Any], status: Mapping[str, Any]
    ) -> None:
        """The audit log's entry for a condition that moved, if it records a decision."""
        event = audit_event(cond)
        if event is None:
            return
        details: dict[str, Any] = {k: cond[k] for k in ("type", "status", "reason", "message")}
        if event is Event.PLACEMENT:
            details["placement"] = status.get("placement")
        elif event is Event.ARTIFACT_PUBLISHED:
            details["artifactRef"] = status.get("artifactRef")
        elif event in (Event.VAULT_ROLE_CREATED, Event.VAULT_ROLE_REVOKED):
            details["vault"] = {k: v for k, v in (status.get("vault") or {}).items() if k != "wrappedDataKey"}
        await self.audit.record(event, Subject.of(body), details)

    async def _publish(
        self,
        key: Key,
        job: FineTuneJob,
        domain: DataDomain,
        status: dict[str, Any],
        seen: Observation,
    ) -> dict[str, Any]:
        """Signs and writes the job's ModelArtifact from its lead worker's result; a signer
        that fails is retried with backoff, a result that cannot be signed is reported."""
        lead = result_pod(seen)
        pods = list(seen.pods)
        result = parse_result(lead.termination_message if lead else None)
        ref = None
        if result is None:
            cond = Cond(
                T.PUBLISHED,
                False,
                PublishedReason.RESULT_INVALID,
                "no result: the worker of completion index 0 that the job's batch Job controls "
                "left none in its termination message",
            )
        else:
            try:
                cond, ref = await self.publisher.publish(job, domain, result, pods, status)
            except SigningError as exc:
                cond = Cond(T.PUBLISHED, False, PublishedReason.SIGNING_FAILED, str(exc))
                self._back_off(key, cap=VAULT_MAX_BACKOFF_SECONDS)
        generation = int(job.metadata.get("generation", 1))
        conditions = merge_conditions(status.get("conditions") or [], [cond], generation, datetime.now(UTC))
        return {**status, "conditions": conditions, **({"artifactRef": ref} if ref else {})}

    async def _finished(
        self,
        key: Key,
        job: FineTuneJob,
        body: Mapping[str, Any],
        status: dict[str, Any],
        *,
        domain: DataDomain | None,
        workload: Workload | None,
    ) -> None:
        """A finished job keeps its status. Its Vault objects are deleted when they fall due,
        and the job itself once ttlSecondsAfterFinished passes: both counted from timestamps in
        its status, so downtime of the operator delays nothing beyond its return."""
        current = status
        if status.get("phase") == "Succeeded" and domain is not None and not _published(status):
            current = await self._publish(key, job, domain, current, self._workload_seen(key, body, workload))
        retention = domain.spec.retention if domain is not None else Retention()
        settled, next_due = await self.custody.settle(
            body,
            workload,
            current,
            retention,
            hold_copies=not _published(current) and current["phase"] == "Succeeded",
            now=datetime.now(UTC),
        )
        await self._write_status(key, body, status, settled)
        ttl = job.spec.scheduling.ttl_seconds_after_finished
        finished_at = (status.get("timestamps") or {}).get("finishedAt")
        if ttl is not None and finished_at is not None:
            due = datetime.strptime(finished_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            remaining = (due + timedelta(seconds=ttl) - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                await self.kube.delete("FineTuneJob", key[1], key[0])
                self.emit(
                    body,
                    type="Normal",
                    reason="TTLExpired",
                    message=f"deleted {ttl} s after it finished (spec.scheduling.ttlSecondsAfterFinished)",
                )
                return
            next_due = remaining if next_due is None else min(next_due, remaining)
        if next_due is not None:
            self.trigger_later(key, next_due)


def audit_event(cond: Mapping[str, Any]) -> Event | None:
    """Which condition transitions are decisions the audit log keeps."""
    kind, true, reason = cond["type"], cond["status"] == "True", cond["reason"]
    if kind == "PolicyAdmitted":
        return Event.POLICY_DECISION
    if kind == "SecretsReady" and reason in ("VaultRoleReady", "VaultRoleRevoked"):
        return Event.VAULT_ROLE_CREATED if true else Event.VAULT_ROLE_REVOKED
    if kind == "Scheduled" and true:
        return Event.PLACEMENT
    if kind == "Published" and true:
        return Event.ARTIFACT_PUBLISHED
    return None


def _published(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Published" and (c.get("status") == "True" or c.get("reason") in PERMANENT_REFUSALS)
        for c in status.get("conditions") or []
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
        cond["type"] in ("PolicyAdmitted", "SecretsReady", "Scheduled")
        and cond["status"] == "False"
        and cond["reason"] not in ("Pending", "VaultRoleRevoked", "WaitingToRun")
    )
