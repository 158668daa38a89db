"""Reading a trainer's metrics into status.progress: the parser, the arithmetic, and the
reader's bounded rate, against the exposition the trainer's own Metrics class writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from sealtune.api.v1alpha1.finetunejob import Progress
from sealtune.observe import PodObservation
from sealtune.progress import ProgressReader, Sample, parse, progress, trainer_metrics_url
from sealtune_trainer.telemetry import Metrics

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def serving(path: str, handler: Any) -> AsyncIterator[int]:
    """A local HTTP server answering GET ``path``; yields its port."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def exposition(step: int = 0, planned: int = 0, loss: float = 0.0, rate: float = 0.0) -> str:
    """What a trainer serves, written by the trainer's own metrics (so names cannot drift)."""
    metrics = Metrics()
    metrics.step.set(step)
    metrics.planned_steps.set(planned)
    metrics.loss.set(loss)
    metrics.tokens_per_second.set(rate)
    metrics.tokens.inc(1234)
    metrics.phase.state("training")
    return generate_latest(metrics.registry).decode()


def sample(step: int, at: datetime = T0, planned: int | None = 100, rate: float | None = 500.0) -> Sample:
    return Sample(at=at, step=step, planned_steps=planned, loss=1.5, tokens_per_second=rate)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (exposition(40, 100, 2.25, 812.5), Sample(T0, 40, 100, 2.25, 812.5)),
        # Before the first step every gauge is 0: plan, loss and rate are not known yet.
        (exposition(0, 0, 0.0, 0.0), Sample(T0, 0, None, None, None)),
        (exposition(3, 50, 0.0, 0.0), Sample(T0, 3, 50, 0.0, None)),
        (exposition(5, 50, float("nan"), float("inf")), Sample(T0, 5, 50, None, None)),
        ("sealtune_trainer_step 7\n", Sample(T0, 7, None, None, None)),
    ],
    ids=["training", "starting", "before-first-log", "not-finite", "step-only"],
)
def test_parse_reads_the_trainers_gauges(text: str, expected: Sample) -> None:
    assert parse(text, T0) == expected


@pytest.mark.parametrize(
    "text",
    ["", "# nothing here\n", "other_metric 1\n", "sealtune_trainer_step -1\n", "<html>not metrics</html>"],
)
def test_parse_refuses_what_is_not_a_trainer(text: str) -> None:
    with pytest.raises(ValueError):
        parse(text, T0)


@pytest.mark.parametrize(
    ("current", "previous", "processes", "expected"),
    [
        (
            sample(40),
            None,
            4,
            {"step": 40, "totalSteps": 100, "percent": 40, "loss": 1.5, "tokensPerSecond": 2000.0},
        ),
        # 10 steps in 20 s: 60 steps left take 120 s.
        (
            sample(40, T0 + timedelta(seconds=20)),
            sample(30),
            1,
            {"step": 40, "percent": 40, "etaSeconds": 120, "tokensPerSecond": 500.0},
        ),
        # No step between the samples: no rate, so no estimate rather than an infinite one.
        (sample(30, T0 + timedelta(seconds=20)), sample(30), 1, {"step": 30, "etaSeconds": None}),
        (sample(100, T0 + timedelta(seconds=5)), sample(90), 1, {"percent": 100, "etaSeconds": 0}),
        # A step past the plan (a resumed run that re-planned) is capped at the plan.
        (sample(120), None, 1, {"step": 100, "percent": 100, "etaSeconds": 0}),
        (sample(7, planned=None, rate=None), None, 2, {"step": 7, "totalSteps": None, "percent": None}),
    ],
    ids=["first-sample", "eta", "stalled", "done", "overshoot", "no-plan"],
)
def test_progress_fields(
    current: Sample, previous: Sample | None, processes: int, expected: dict[str, Any]
) -> None:
    result = progress(current, previous, processes)
    for name, value in expected.items():
        assert result.get(name) == value, name
    assert result["updatedAt"] == current.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    # What status.progress accepts (the CRD's schema comes from the same model).
    assert Progress.model_validate(result).to_json() == result


def test_reader_reads_at_a_bounded_rate_and_keeps_the_last_progress() -> None:
    asyncio.run(reads_at_a_bounded_rate())


def test_reader_gives_up_on_a_trainer_that_does_not_answer() -> None:
    asyncio.run(gives_up_on_silence())


async def reads_at_a_bounded_rate() -> None:
    served = {"requests": 0, "text": exposition(10, 100, 2.0, 100.0)}

    async def metrics(_: web.Request) -> web.Response:
        served["requests"] += 1
        return web.Response(text=served["text"])

    async with serving("/metrics", metrics) as port:
        reader = ProgressReader(interval_seconds=0.3, timeout_seconds=2)
        key, url = ("ns", "job"), f"http://127.0.0.1:{port}/metrics"
        try:
            first = await reader.read(key, url, 2, T0)
            assert first is not None and first["step"] == 10 and first["tokensPerSecond"] == 200.0
            served["text"] = exposition(20, 100, 1.0, 100.0)
            # Within the interval: no request, the last progress.
            assert await reader.read(key, url, 2, T0 + timedelta(seconds=10)) == first
            assert served["requests"] == 1
            await asyncio.sleep(reader.due_in(key) + 0.05)
            second = await reader.read(key, url, 2, T0 + timedelta(seconds=10))
            assert second is not None and second["step"] == 20 and second["etaSeconds"] == 80
            # A trainer that stops answering keeps the last progress.
            await asyncio.sleep(reader.due_in(key) + 0.05)
            served["text"] = "not metrics"
            assert await reader.read(key, url, 2, T0 + timedelta(seconds=20)) == second
            reader.forget(key)
            assert await reader.read(key, url, 2, T0 + timedelta(seconds=30)) is None
        finally:
            await reader.close()


async def gives_up_on_silence() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = ProgressReader(timeout_seconds=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        assert await reader.read(("ns", "job"), f"http://127.0.0.1:{port}/metrics", 1, T0) is None
        assert loop.time() - started < 2
    finally:
        await reader.close()
        server.close()


def worker(index: int, phase: str = "Running", ip: str | None = "10.1.2.3") -> PodObservation:
    return PodObservation(
        name=f"job-{index}",
        index=index,
        node_name="n",
        phase=phase,
        runtime_class=None,
        unschedulable=None,
        ip=ip,
    )


def test_the_trainer_is_read_at_its_first_running_workers_ip() -> None:
    assert trainer_metrics_url([worker(1), worker(0, ip="10.0.0.7")], 9400) == "http://10.0.0.7:9400/metrics"
    assert trainer_metrics_url([worker(0, ip="fd00::7")], 9400) == "http://[fd00::7]:9400/metrics"
    assert trainer_metrics_url([worker(0, phase="Pending"), worker(1)], 9400) is None
    assert trainer_metrics_url([worker(0, ip=None)], 9400) is None


def test_one_loop_follows_many_jobs_and_says_when_progress_moved() -> None:
    asyncio.run(follows_many_jobs())


async def follows_many_jobs() -> None:
    steps = {"a": 10, "b": 10, "c": 10}
    served: list[str] = []

    async def metrics(request: web.Request) -> web.Response:
        job = request.match_info["job"]
        served.append(job)
        return web.Response(text=exposition(steps[job], 100, 2.0, 100.0))

    async with serving("/{job}/metrics", metrics) as port:
        moved: list[tuple[str, str]] = []
        reader = ProgressReader(interval_seconds=0.2, timeout_seconds=2, concurrency=2, on_moved=moved.append)
        try:
            for job in steps:
                reader.follow(("ns", job), f"http://127.0.0.1:{port}/{job}/metrics", 1)
            await asyncio.sleep(0.1)
            # All three read once, two at a time, and each first read is news.
            assert sorted(served) == ["a", "b", "c"] and sorted(moved) == [
                ("ns", "a"),
                ("ns", "b"),
                ("ns", "c"),
            ]
            ours = [t for t in asyncio.all_tasks() if "ProgressReader" in t.get_coro().__qualname__]  # type: ignore[union-attr]
            assert len(ours) == 1  # one loop, not a task per job
            steps["b"] = 20
            reader.unfollow(("ns", "c"))
            moved.clear()
            async with asyncio.timeout(5):
                while served.count("a") < 3 or served.count("b") < 3:
                    await asyncio.sleep(0.05)
            # Read again after each interval; only b moved, and c is no longer read.
            assert set(moved) == {("ns", "b")}
            assert served.count("c") == 1
            assert reader.last(("ns", "b"), 1)["step"] == 20  # type: ignore[index]
        finally:
            await reader.close()


def test_a_job_followed_again_is_read_once_per_interval() -> None:
    asyncio.run(followed_again())


async def followed_again() -> None:
    served: list[str] = []

    async def metrics(_: web.Request) -> web.Response:
        served.append("a")
        return web.Response(text=exposition(10, 100, 2.0, 100.0))

    async with serving("/metrics", metrics) as port:
        reader = ProgressReader(interval_seconds=0.3, timeout_seconds=2)
        key, url = ("ns", "a"), f"http://127.0.0.1:{port}/metrics"
        try:
            reader.follow(key, url, 1)
            async with asyncio.timeout(5):
                while not served:
                    await asyncio.sleep(0.01)
            # Its first schedule stays behind in the heap; only the new one counts.
            reader.unfollow(key)
            reader.follow(key, url, 1)
            reader.follow(key, url, 1)
            await asyncio.sleep(1.0)
            # Read at 0, then about 0.3, 0.6 and 0.9 s on: never twice per interval.
            assert 2 <= len(served) <= 5
        finally:
            await reader.close()
