"""Live training progress: a trainer's Prometheus exposition, read into ``status.progress``.

``parse`` and ``progress`` are pure. ``ProgressReader`` does the I/O: at most one read per job
per interval, each with a short timeout and a cap on concurrent reads, all from one loop, so
the operator's cost stays bounded however many jobs run, and a trainer that does not answer
delays nothing.

What the trainer exports (sealtune_trainer.telemetry): ``sealtune_trainer_step``,
``sealtune_trainer_planned_steps``, ``sealtune_trainer_loss_nats`` (the step's loss, already
averaged across all ranks) and ``sealtune_trainer_tokens_per_second`` (of the one process per
pod that serves the endpoint, local rank 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .api.v1alpha1 import FineTuneJob
from .api.v1alpha1.finetunejob import Progress
from .observe import PodObservation

log = logging.getLogger(__name__)

Key = tuple[str, str]

STEP = "sealtune_trainer_step"
PLANNED_STEPS = "sealtune_trainer_planned_steps"
LOSS = "sealtune_trainer_loss_nats"
TOKENS_PER_SECOND = "sealtune_trainer_tokens_per_second"
MAX_BODY_BYTES = 256 * 1024
"""The trainer's exposition is a few KiB; anything much larger is not a trainer."""


@dataclass(frozen=True)
class Sample:
    """One read of a trainer's metrics."""

    at: datetime
    step: int
    planned_steps: int | None
    loss: float | None
    tokens_per_second: float | None
    """Of the process that serves the endpoint (one of the job's processes)."""


def _finite(value: float | None) -> float | None:
    # JSON (and so status) cannot hold NaN or infinity.
    return value if value is not None and math.isfinite(value) else None


def parse(text: str, at: datetime) -> Sample:
    """The sample in a trainer's Prometheus text exposition.

    Raises ValueError when the text is not an exposition or has no step gauge: whatever
    answered is not a sealtune trainer (or not yet one), and nothing should be reported.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (STEP, PLANNED_STEPS, LOSS, TOKENS_PER_SECOND):
                values[sample.name] = sample.value
    step = _finite(values.get(STEP))
    if step is None or step < 0:
        raise ValueError(f"no {STEP} gauge in the exposition")
    planned = _finite(values.get(PLANNED_STEPS))
    rate = _finite(values.get(TOKENS_PER_SECOND))
    return Sample(
        at=at,
        step=int(step),
        # Gauges start at 0: a zero is "not known yet", never a real plan, loss or rate.
        planned_steps=int(planned) if planned and planned > 0 else None,
        loss=_finite(values.get(LOSS)) if step > 0 else None,
        tokens_per_second=rate if rate and rate > 0 else None,
    )


def progress(current: Sample, previous: Sample | None, processes: int) -> dict[str, Any]:
    """``status.progress`` from the latest sample and the one before it.

    ``processes`` is the job's world size (workers x processes per worker). Ranks run their
    steps in lockstep on equal shares of each batch, so one process's rate times the number of
    processes is the job's. The time left is extrapolated from the steps done between the two
    samples, and is left out until two samples show progress.
    """
    planned = current.planned_steps
    step = min(current.step, planned) if planned is not None else current.step
    eta: int | None = None
    if planned is not None and step >= planned:
        eta = 0
    elif planned is not None and previous is not None:
        steps = step - previous.step
        seconds = (current.at - previous.at).total_seconds()
        if steps > 0 and seconds > 0:
            eta = math.ceil((planned - step) * seconds / steps)
    rate = current.tokens_per_second
    return Progress(
        step=step,
        total_steps=planned,
        percent=step * 100 // planned if planned else None,
        loss=current.loss,
        tokens_per_second=rate * max(processes, 1) if rate is not None else None,
        eta_seconds=eta,
        updated_at=current.at,
    ).to_json()


def _moved(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    """Whether a read brought news: a fresh read of a trainer that stands still changes only
    ``updatedAt``, and a status write for that, every interval for every job, would be noise."""

    def news(progress: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if progress is None else {k: v for k, v in progress.items() if k != "updatedAt"}

    return news(before) != news(after)


def trainer_metrics_url(pods: Iterable[PodObservation], port: int) -> str | None:
    """The metrics endpoint of the job's first worker while it runs, by its pod's IP (the pods
    are watched, so the IP is current). Not by its name under the headless Service: each name
    would cost a DNS lookup, which holds a thread for as long as the resolver waits."""
    for pod in pods:
        if pod.index == 0 and pod.phase == "Running" and pod.ip:
            host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
            return f"http://{host}:{port}/metrics"
    return None


@dataclass
class ProgressReader:
    """Reads trainers' metrics for the reconcile, at a bounded rate."""

    interval_seconds: float = 30.0
    """A job's trainer is read at most once per interval; between reads its last progress holds."""
    timeout_seconds: float = 5.0
    concurrency: int = 8
    on_moved: Callable[[Key], None] = lambda key: None
    """Called with a followed job whose progress moved."""
    _samples: dict[Key, tuple[Sample, Sample | None]] = field(default_factory=dict)
    _tried: dict[Key, float] = field(default_factory=dict)
    _followed: dict[Key, tuple[str, int]] = field(default_factory=dict)
    """Per followed job, its trainer's URL and its number of processes."""
    _schedule: list[tuple[float, Key]] = field(default_factory=list)
    """Followed jobs by the loop time their next read falls due, a heap: the next due job is
    found as fast among thousands as among a few. An entry that ``_due_at`` does not hold
    (its job no longer followed, or scheduled again since) is skipped."""
    _due_at: dict[Key, float] = field(default_factory=dict)
    _follower: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _session: aiohttp.ClientSession | None = None
    _limit: asyncio.Semaphore | None = None

    def follow(self, key: Key, url: str, processes: int) -> None:
        """Reads the job's trainer once per interval from now on, in the background."""
        new = key not in self._followed
        self._followed[key] = (url, processes)
        if new:
            self._schedule_read(key)
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(self._follow_all())
        elif new:
            self._wake.set()

    def unfollow(self, key: Key) -> None:
        self._followed.pop(key, None)
        self._due_at.pop(key, None)

    def _schedule_read(self, key: Key) -> None:
        at = self._due_at[key] = asyncio.get_running_loop().time() + self.due_in(key)
        heapq.heappush(self._schedule, (at, key))

    def _take_due(self) -> list[Key]:
        """Up to ``concurrency`` followed jobs whose read is due, out of the schedule."""
        now = asyncio.get_running_loop().time()
        due: list[Key] = []
        while self._schedule and len(due) < self.concurrency:
            at, key = self._schedule[0]
            if self._due_at.get(key) == at:
                if at > now:
                    break
                del self._due_at[key]
                due.append(key)
            heapq.heappop(self._schedule)
        return due

    async def _follow_all(self) -> None:
        """One loop for all followed jobs (not a task each: thousands may run): reads those
        due, ``concurrency`` at a time, then sleeps until the next falls due or a job is added."""
        while self._followed:
            due = self._take_due()
            if due:
                for outcome in await asyncio.gather(*map(self._read_followed, due), return_exceptions=True):
                    if isinstance(outcome, Exception):
                        log.error("reading a trainer's progress failed unexpectedly", exc_info=outcome)
                for key in due:
                    if key in self._followed and key not in self._due_at:
                        self._schedule_read(key)
                continue
            self._wake.clear()
            next_due = (
                self._schedule[0][0] - asyncio.get_running_loop().time()
                if self._schedule
                else self.interval_seconds
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_due))

    async def _read_followed(self, key: Key) -> None:
        url, processes = self._followed[key]
        before = self.last(key, processes)
        after = await self.read(key, url, processes, datetime.now(UTC))
        if key in self._followed and _moved(before, after):
            self.on_moved(key)

    def due_in(self, key: Key) -> float:
        """Seconds until the job's trainer may be read again (0: now)."""
        tried = self._tried.get(key)
        if tried is None:
            return 0.0
        return max(0.0, tried + self.interval_seconds - asyncio.get_running_loop().time())

    async def read(self, key: Key, url: str, processes: int, now: datetime) -> dict[str, Any] | None:
        """The job's ``status.progress``: freshly read when due, else the last one (None
        before the first successful read). A failed read is logged and keeps the last one."""
        if self.due_in(key) == 0:
            self._tried[key] = asyncio.get_running_loop().time()
            try:
                sample = parse(await self._fetch(url), now)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                log.debug("progress of %s/%s not read from %s: %s", *key, url, error)
            else:
                last = self._samples.get(key)
                self._samples[key] = (sample, last[0] if last else None)
        return self.last(key, processes)

    def last(self, key: Key, processes: int) -> dict[str, Any] | None:
        """The job's progress as last read, without reading."""
        samples = self._samples.get(key)
        return progress(samples[0], samples[1], processes) if samples else None

    def forget(self, key: Key) -> None:
        self.unfollow(key)
        self._samples.pop(key, None)
        self._tried.pop(key, None)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _fetch(self, url: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
            self._limit = asyncio.Semaphore(self.concurrency)
        assert self._limit is not None
        async with self._limit, self._session.get(url) as response:
            response.raise_for_status()
            body = await response.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"the exposition is larger than {MAX_BODY_BYTES} bytes")
        return body.decode("utf-8", errors="replace")


def world_size(job: FineTuneJob) -> int:
    """Processes of a job: one per GPU of each worker (one for a CPU-only worker), as the
    Indexed Job's WORLD_SIZE says."""
    resources = job.spec.resources
    return resources.workers * max(resources.gpus_per_worker, 1)
