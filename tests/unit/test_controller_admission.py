"""A burst of new jobs waits as keys: only so many reconciles of jobs not yet applied run (and
hold their parsed jobs) at once, while reconciles of jobs already applied never wait."""

from __future__ import annotations

import asyncio

from sealtune.reconcile import Controller, Snapshot
from sealtune.settings import Settings

LIMIT = 3


class Counting(Controller):
    def __init__(self) -> None:
        super().__init__(
            settings=Settings(max_concurrent_applies=LIMIT),
            kube=None,  # type: ignore[arg-type]
            emit=lambda body, **event: None,
            custody=None,  # type: ignore[arg-type]
            publisher=None,  # type: ignore[arg-type]
            audit=None,  # type: ignore[arg-type]
            snapshot=Snapshot(finetunejobs=dict, batch_jobs=dict, pods=dict, domains=dict, namespaces=dict),
        )
        self.now = self.most = 0

    async def _decide(self, key: tuple[str, str]) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.01)
        self._applied[key] = ((), "digest")
        self.now -= 1


async def burst(controller: Counting, keys: list[tuple[str, str]]) -> None:
    for key in keys:
        controller.trigger(key)
    await asyncio.gather(*list(controller._running.values()))


def test_new_jobs_wait_their_turn_and_applied_ones_do_not() -> None:
    async def go() -> None:
        controller = Counting()
        keys = [("ns", f"job-{i}") for i in range(20)]
        await burst(controller, keys)
        assert controller.most == LIMIT, "new jobs are reconciled only so many at once"
        controller.most = 0
        await burst(controller, keys)
        assert controller.most == len(keys), "jobs already applied pass at once"

    asyncio.run(go())
