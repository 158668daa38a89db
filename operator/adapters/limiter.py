"""A concurrency limit with two classes of request: urgent ones (making the objects a job needs)
go first; deferrable ones (status reports) wait while any urgent request is in flight or queued.

In a burst of thousands of new jobs, every status write competes with the next job's children
for the same API server, even when the client has slots to spare: the server is the bottleneck.
Reporting can wait a few seconds; the children are what gets the jobs running. A deferrable
request waits only while urgent work goes on, so it is never held for longer than the burst.
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
        self._urgent = 0
        """Urgent requests holding a slot."""
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
        if self._free > 0 and not self._waiting and not (rank and self._urgent):
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

    def _take(self, rank: int) -> None:
        self._free -= 1
        self._urgent += rank == 0

    def _release(self, rank: int) -> None:
        self._free += 1
        self._urgent -= rank == 0
        self._wake()

    def _wake(self) -> None:
        """Hands free slots to waiters, best rank first; deferrable ones only once no urgent
        request holds a slot. A cancelled waiter's entry stays in the heap until it comes up
        here, and is skipped."""
        while self._free > 0 and self._waiting:
            rank, _, future = self._waiting[0]
            if rank and self._urgent:
                return
            heappop(self._waiting)
            if not future.done():
                self._take(rank)
                future.set_result(None)
