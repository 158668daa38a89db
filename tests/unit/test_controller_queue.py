"""The controller's work queue: a fixed number of workers reconcile the triggered jobs; a job is
queued once however often it is triggered while it waits, and runs once more when triggered
while it runs; status writes wait behind every queued reconcile."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from sealtune.reconcile import Controller, Key, Packed, Snapshot
from sealtune.settings import Settings


class Recording(Controller):
    def __init__(self, workers: int) -> None:
        super().__init__(
            settings=Settings(max_concurrent_reconciles=workers),
            kube=None,  # type: ignore[arg-type]
            emit=lambda body, **event: None,
            custody=None,  # type: ignore[arg-type]
            publisher=None,  # type: ignore[arg-type]
            audit=None,  # type: ignore[arg-type]
            snapshot=Snapshot(finetunejobs=dict, batch_jobs=dict, pods=dict, domains=dict, namespaces=dict),
        )
        self.runs: Counter[Key] = Counter()
        self.busy = self.peak = 0

    async def reconcile(self, key: Key) -> None:
        self.runs[key] += 1
        self.busy += 1
        self.peak = max(self.peak, self.busy)
        await asyncio.sleep(0.01)
        self.busy -= 1


def test_a_fixed_number_of_workers_reconcile_each_triggered_job_once() -> None:
    async def go() -> Recording:
        ctl = Recording(workers=3)
        keys = [("ns", f"job-{i}") for i in range(20)]
        for key in keys:
            ctl.trigger(key)
            ctl.trigger(key)  # while it waits: folds into the queued run
        await asyncio.sleep(0.005)
        assert keys[0] in ctl._active
        ctl.trigger(keys[0])  # while it runs: one more run after this one
        async with asyncio.timeout(5):
            while ctl._queued or ctl._active:
                await asyncio.sleep(0.01)
        assert len(ctl._workers) == 3
        for task in ctl._workers:
            task.cancel()
        return ctl

    ctl = asyncio.run(go())
    assert ctl.peak == 3
    assert ctl.runs == Counter({("ns", "job-0"): 2, **{("ns", f"job-{i}"): 1 for i in range(1, 20)}})


def job_body(key: Key, version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": key[1], "namespace": key[0], "resourceVersion": version},
        "status": {},
    }


class Deferring(Recording):
    """Each reconcile leaves a status to write, as the real one does, until one is written (as
    the real one then finds nothing new); reconciles and writes are recorded in order."""

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.kube = self  # type: ignore[assignment]
        self.order: list[tuple[str, str]] = []

    async def reconcile(self, key: Key) -> None:
        self.order.append(("reconcile", key[1]))
        await asyncio.sleep(0.01)
        if key not in self._written:
            self._deferred[key] = (Packed.of(job_body(key)), {"phase": "Pending"})

    async def patch_status(self, kind: str, name: str, namespace: str, status: Any, version: str) -> Any:
        self.order.append(("status", name))
        await asyncio.sleep(0.01)
        return job_body((namespace, name), version="2")


def test_status_writes_wait_behind_every_queued_reconcile_and_the_job_stays_busy_meanwhile() -> None:
    async def go() -> Deferring:
        ctl = Deferring()
        keys = [("ns", f"job-{i}") for i in range(6)]
        for key in keys:
            ctl.trigger(key)
        await asyncio.sleep(0.015)
        ctl.trigger(keys[0])  # reconciled, its status not yet written: runs again after the write
        async with asyncio.timeout(5):
            while ctl._queued or ctl._active:
                await asyncio.sleep(0.01)
        for task in ctl._workers:
            task.cancel()
        return ctl

    ctl = asyncio.run(go())
    order = ctl.order
    first_status = order.index(next(step for step in order if step[0] == "status"))
    assert sorted(name for _, name in order[:first_status]) == [f"job-{i}" for i in range(6)]
    for i in range(6):
        # One write, then the pass its new phase calls for (job-0's trigger folds into it).
        steps = [what for what, name in order if name == f"job-{i}"]
        assert steps == ["reconcile", "status", "reconcile"]
