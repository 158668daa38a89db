"""A concurrency limit with two classes of request: urgent ones (making the objects a job needs)
go first; deferrable ones (status reports) take a free slot only when no urgent request waits.

In a burst of thousands of new jobs, every status write competes with the next job's children
for the same API server; reporting can wait a few seconds, the children are what gets the job
running. A deferrable request waits only while urgent ones queue, so it is never starved for
longer than the burst lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from heapq import heappop, heappush


class PriorityLimiter:
    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, *, deferrable: bool = False) -> AsyncIterator[None]:
        await self._acquire(1 if deferrable else 0)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, rank: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heappush(self._waiting, (rank, next(self._order), future))
        self._wake()
        try:
            await future
        except asyncio.CancelledError:
            if not future.cancelled():
                self._release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def _release(self) -> None:
        self._free += 1
        self._wake()

    def _wake(self) -> None:
        """Hands free slots to waiters, best rank first. A cancelled waiter's entry stays in the
        heap until it comes up here, and is skipped."""
        while self._free > 0 and self._waiting:
            future = heappop(self._waiting)[2]
            if not future.done():
                self._free -= 1
                future.set_result(None)
