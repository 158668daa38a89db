"""A concurrency limit with two classes of request: urgent ones (making the objects a job needs)
go first; deferrable ones (status reports) wait while any urgent request is in flight or queued.

In a burst of thousands of new jobs, every status write competes with the next job's children
for the same API server, even when the client has slots to spare: the server is the bottleneck.
Reporting can wait a few seconds; the children are what gets the jobs running. A deferrable
request waits only while urgent work goes on, so it is never held for longer than the burst.

Between two urgent requests of a burst's tail there are moments with none in flight. Deferred
writes pile up by then; let them take every free slot and the burst's last creates share the
server with a flood of status writes. So until the urgent work has been quiet for `calm_s`,
only a quarter of the slots go to deferrable requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator
from heapq import heappop, heappush


class PriorityLimiter:
    def __init__(self, limit: int, *, calm_s: float = 1.0) -> None:
        self._limit = self._free = limit
        self._urgent = 0
        """Urgent requests holding a slot; the others in flight are deferrable ones."""
        self._busy_share = max(1, limit // 4)
        self._calm_s = calm_s
        self._urgent_until = -math.inf
        """When the last urgent request gave back its slot."""
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, *, deferrable: bool = False) -> AsyncIterator[None]:
        rank = 1 if deferrable else 0
        await self._acquire(rank)
        try:
            yield
        finally:
            self._release(rank)

    async def _acquire(self, rank: int) -> None:
        if self._free > 0 and not self._waiting and self._may_go(rank):
            self._take(rank)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heappush(self._waiting, (rank, next(self._order), future))
        self._wake()
        try:
            await future
        except asyncio.CancelledError:
            if not future.cancelled():
                self._release(rank)  # the slot was handed over as we were cancelled: pass it on
            raise

    def _may_go(self, rank: int) -> bool:
        if not rank:
            return True
        if self._urgent:
            return False
        calm = asyncio.get_running_loop().time() - self._urgent_until >= self._calm_s
        return calm or self._limit - self._free < self._busy_share  # all in flight are deferrable

    def _take(self, rank: int) -> None:
        self._free -= 1
        self._urgent += rank == 0

    def _release(self, rank: int) -> None:
        self._free += 1
        self._urgent -= rank == 0
        if not rank:
            self._urgent_until = asyncio.get_running_loop().time()
        self._wake()

    def _wake(self) -> None:
        """Hands free slots to waiters, best rank first; deferrable ones only as `_may_go` allows.
        A deferrable waiter held back by the busy share is woken by the release of one of the
        deferrable requests that fill it. A cancelled waiter's entry stays in the heap until it
        comes up here, and is skipped."""
        while self._free > 0 and self._waiting:
            rank, _, future = self._waiting[0]
            if not self._may_go(rank):
                return
            heappop(self._waiting)
            if not future.done():
                self._take(rank)
                future.set_result(None)
