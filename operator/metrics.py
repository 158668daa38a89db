"""The operator's Prometheus metrics: prefix ``sealtune_``, units in the names.

Two sources:

- Events, counted as they happen by the small functions below, which the reconcile and the
  webhook call: reconciles, policy refusals, Vault errors, webhook calls, and the time a job
  took from creation to Running.
- State, computed at scrape time by ``StateCollector`` from kopf's in-memory indexes: jobs by
  phase, artifacts by stage, overdue deletions, and the jobs that alerts name (failed, pending,
  failed gates). Nothing keeps these up to date by hand, so they cannot drift from what the
  operator sees. A replica that is not active (kopf peering) has not listed anything and
  reports no state; alerts aggregate with max, not sum, across replicas.

Everything is served from the operator's event loop (``serve``): the collector reads the
indexes in the thread that mutates them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import kopf
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .adapters.kube import Conflict
from .status import transitions

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

JOB_PHASES = ("Pending", "Blocked", "Suspended", "Running", "Succeeded", "Failed")
STAGES = ("Candidate", "Approved", "Revoked")
# From tens of milliseconds (an unchanged job) to the API server's request timeout.
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The API server gives up on a webhook after its timeoutSeconds (at most 30).
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a job that starts at once on free capacity to one that waited hours for GPUs.
TO_RUNNING_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)

RECONCILE_DURATION = Histogram(
    "sealtune_reconcile_duration_seconds",
    "Time one reconcile took, by kind and result (success, conflict, error); "
    "its _count is the number of reconciles.",
    ["kind", "result"],
    buckets=RECONCILE_BUCKETS,
    registry=REGISTRY,
)
POLICY_REFUSALS = Counter(
    "sealtune_policy_refusals",
    "FineTuneJobs refused by their DataDomain's policy, by reason and where (admission: the "
    "webhook refused the write; reconcile: PolicyAdmitted turned False).",
    ["reason", "source"],
    registry=REGISTRY,
)
TIME_TO_RUNNING = Histogram(
    "sealtune_finetunejob_time_to_running_seconds",
    "Seconds from a FineTuneJob's creation until its Running condition turned True.",
    buckets=TO_RUNNING_BUCKETS,
    registry=REGISTRY,
)
VAULT_ERRORS = Counter(
    "sealtune_vault_errors",
    "Vault requests that failed (unreachable, sealed, refused or a server error), by operation.",
    ["operation"],
    registry=REGISTRY,
)
DELETIONS = Counter(
    "sealtune_deletions",
    "Deletions done, verified and given a signed receipt, by kind of what was deleted.",
    ["kind"],
    registry=REGISTRY,
)
RELEASES = Counter(
    "sealtune_artifact_releases",
    "Requests for an artifact's files the operator decided, by outcome (Released, Refused by the "
    "domain's rule, Failed while copying).",
    ["outcome"],
    registry=REGISTRY,
)
RECEIPTS_FAILED = Counter(
    "sealtune_deletion_receipts_failed",
    "Deletions done whose receipt could not be signed or written to the audit log (retried).",
    registry=REGISTRY,
)
WEBHOOK_DURATION = Histogram(
    "sealtune_webhook_duration_seconds",
    "Time the admission webhook took to answer, by result (allowed, refused, error).",
    ["result"],
    buckets=WEBHOOK_BUCKETS,
    registry=REGISTRY,
)

RefusalSource = Literal["admission", "reconcile"]


def observe_reconcile(kind: str, result: str, seconds: float) -> None:
    RECONCILE_DURATION.labels(kind=kind, result=result).observe(seconds)


@contextmanager
def reconcile_timer(kind: str) -> Iterator[None]:
    """Times the block as one reconcile of ``kind``; an exception decides its result and goes on."""
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "success"
    except Conflict:
        result = "conflict"
        raise
    finally:
        observe_reconcile(kind, result, time.perf_counter() - start)


def count_refusal(reason: str, source: RefusalSource) -> None:
    POLICY_REFUSALS.labels(reason=reason, source=source).inc()


def vault_error(operation: str) -> None:
    """A failed Vault request; ``operation`` is a short fixed name (e.g. write_role, sign)."""
    VAULT_ERRORS.labels(operation=operation).inc()


def deletion_done(kind: str) -> None:
    DELETIONS.labels(kind=kind).inc()


def release_decided(outcome: str) -> None:
    RELEASES.labels(outcome=outcome).inc()


def receipt_failed() -> None:
    RECEIPTS_FAILED.inc()


@contextmanager
def webhook_timer() -> Iterator[None]:
    """Times one admission review; a refusal is an exception the webhook raises on purpose."""
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "allowed"
    except kopf.AdmissionError:
        result = "refused"
        raise
    finally:
        WEBHOOK_DURATION.labels(result=result).observe(time.perf_counter() - start)


def observe_status(body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Counts what a status write changes: a policy refusal, a job that started running. Call it
    once per write that succeeded, so a reconcile that runs again counts nothing twice."""
    for cond in transitions(old.get("conditions") or [], new.get("conditions") or []):
        if cond["type"] == "PolicyAdmitted" and cond["status"] == "False":
            count_refusal(cond["reason"], "reconcile")
        elif cond["type"] == "Running" and cond["status"] == "True":
            created = _time(body["metadata"].get("creationTimestamp"))
            running = _time(cond.get("lastTransitionTime"))
            if created is not None and running is not None:
                TIME_TO_RUNNING.observe(max((running - created).total_seconds(), 0.0))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or []}


Store = Callable[[], Mapping[Any, Any]]


class StateCollector(Collector):
    """Metrics of the state in kopf's indexes, computed at each scrape.

    Per-job series exist only for jobs in trouble (failed, pending, failed gates), so their
    number follows the incidents, not the size of the cluster.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._finetunejobs: Store | None = None
        self._artifacts: Store | None = None

    def bind(self, finetunejobs: Store, artifact_stages: Store) -> None:
        """Points the collector at the indexes: (namespace, name) -> packed FineTuneJobs (with
        a ``body()``), and (namespace, name) -> stage of each ModelArtifact."""
        self._finetunejobs, self._artifacts = finetunejobs, artifact_stages

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Families without samples: registering must not read indexes that are not bound yet.
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = self._families()
        if self._finetunejobs is None or self._artifacts is None:
            return []  # nothing listed yet: no state is better than a false zero
        (phases, pending, failed, gates, overdue, oldest, stages) = families
        now = self._clock()
        counts = dict.fromkeys(JOB_PHASES, 0)
        due: list[float] = []
        for (namespace, name), stored in list(self._finetunejobs().items()):
            for packed in stored:
                body = packed.body()
                status = body.get("status") or {}
                phase = status.get("phase") or "Pending"
                counts[phase] = counts.get(phase, 0) + 1
                conditions = _conditions(status)
                created = _time(body["metadata"].get("creationTimestamp"))
                if phase == "Pending" and created is not None:
                    pending.add_metric([namespace, name], (now - created).total_seconds())
                if phase == "Failed":
                    reason = conditions.get("Failed", {}).get("reason", "")
                    failed.add_metric([namespace, name, reason], 1)
                published = conditions.get("Published", {})
                if published.get("reason") == "GatesFailed":
                    gates.add_metric([namespace, name], 1)
                due.extend(_overdue(status, now))
        for phase, count in counts.items():
            phases.add_metric([phase], count)
        overdue.add_metric([], len(due))
        oldest.add_metric([], max(due, default=0.0))
        stage_counts = dict.fromkeys(STAGES, 0)
        for stored in list(self._artifacts().values()):
            for stage in stored:
                stage_counts[stage] = stage_counts.get(stage, 0) + 1
        for stage, count in stage_counts.items():
            stages.add_metric([stage], count)
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("sealtune_finetunejobs", "FineTuneJobs by status.phase.", labels=["phase"]),
            GaugeMetricFamily(
                "sealtune_finetunejob_pending_seconds",
                "Seconds since creation of each FineTuneJob still in phase Pending.",
                labels=["namespace", "name"],
            ),
            GaugeMetricFamily(
                "sealtune_finetunejob_failed",
                "1 for each FineTuneJob in phase Failed, with its Failed condition's reason.",
                labels=["namespace", "name", "reason"],
            ),
            GaugeMetricFamily(
                "sealtune_finetunejob_gates_failed",
                "1 for each FineTuneJob whose artifact failed an evaluation gate (Published reason "
                "GatesFailed): a Candidate that cannot be approved.",
                labels=["namespace", "name"],
            ),
            GaugeMetricFamily(
                "sealtune_deletions_overdue",
                "Scheduled deletions of jobs' data that are past due and not done.",
            ),
            GaugeMetricFamily(
                "sealtune_deletion_overdue_oldest_seconds",
                "Seconds the most overdue scheduled deletion is past due (0 when none is).",
            ),
            GaugeMetricFamily(
                "sealtune_modelartifacts", "ModelArtifacts by promotion stage.", labels=["stage"]
            ),
        )


def _overdue(status: Mapping[str, Any], now: datetime) -> list[float]:
    """Seconds past due of each scheduled deletion in a job's status that is not done."""
    late = []
    for deletion in status.get("deletions") or []:
        due = _time(deletion.get("dueAt"))
        if due is not None and not deletion.get("deletedAt") and due <= now:
            late.append((now - due).total_seconds())
    return late


STATE = StateCollector()
REGISTRY.register(STATE)


async def serve(port: int, address: str = "") -> web.AppRunner:
    """Serves /metrics on the running event loop; the caller cleans the runner up at exit.
    An empty address listens on every interface (the pod's, for Prometheus)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address or None, port).start()
    return runner
