"""The controller's work queue: a fixed number of workers reconcile the triggered jobs; a job is
queued once however often it is triggered while it waits, and runs once more when triggered
while it runs."""

from __future__ import annotations

import asyncio
from collections import Counter

from sealtune.reconcile import Controller, Key, Snapshot
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
        while ctl._queued or ctl._active:
            await asyncio.sleep(0.01)
        assert len(ctl._workers) == 3
        for task in ctl._workers:
            task.cancel()
        return ctl

    ctl = asyncio.run(go())
    assert ctl.peak == 3
    assert ctl.runs == Counter({("ns", "job-0"): 2, **{("ns", f"job-{i}"): 1 for i in range(1, 20)}})
