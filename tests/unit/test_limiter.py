"""The API client's concurrency limit: urgent requests first, deferrable ones only while no urgent
one is in flight and only a quarter of the slots until urgent work has been quiet for a while,
never more than the limit at once, and no slot lost to a cancelled waiter."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from sealtune.adapters.limiter import PriorityLimiter


async def hold(limiter: PriorityLimiter, order: list[str], name: str, *, deferrable: bool) -> None:
    async with limiter.slot(deferrable=deferrable):
        order.append(name)
        await asyncio.sleep(0)


def in_flight(limiter: PriorityLimiter) -> int:
    return limiter._limit - limiter._free


def test_urgent_requests_go_before_deferrable_ones_and_each_class_keeps_its_order() -> None:
    async def go() -> list[str]:
        limiter, order = PriorityLimiter(1), []
        async with limiter.slot():
            tasks = [
                asyncio.create_task(hold(limiter, order, name, deferrable=name.startswith("status")))
                for name in ("status-1", "child-1", "status-2", "child-2")
            ]
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(go()) == ["child-1", "child-2", "status-1", "status-2"]


def test_deferrable_requests_wait_while_urgent_ones_are_in_flight_even_with_slots_free() -> None:
    async def go() -> None:
        limiter, order = PriorityLimiter(4, calm_s=0), []
        async with limiter.slot():
            status = asyncio.create_task(hold(limiter, order, "status", deferrable=True))
            await asyncio.sleep(0)
            await hold(limiter, order, "child", deferrable=False)
            assert order == ["child"], "the status write waits for the urgent request still held"
        await asyncio.wait_for(status, timeout=1)
        assert order == ["child", "status"]
        async with limiter.slot(deferrable=True), limiter.slot(deferrable=True):
            pass  # with no urgent work, deferrable requests take free slots at once

    asyncio.run(go())


def test_deferrable_requests_get_a_quarter_of_the_slots_until_urgent_work_has_been_quiet() -> None:
    async def hold_until(limiter: PriorityLimiter, released: asyncio.Event) -> None:
        async with limiter.slot(deferrable=True):
            await released.wait()

    async def go() -> None:
        calm_s = 0.2
        limiter = PriorityLimiter(8, calm_s=calm_s)
        async with limiter.slot():
            pass
        releases = [asyncio.Event() for _ in range(3)]
        held = [asyncio.create_task(hold_until(limiter, released)) for released in releases]
        await asyncio.sleep(calm_s / 4)
        assert in_flight(limiter) == 2, "two of eight slots: the deferrable share while urgent work is recent"
        releases[0].set()
        await asyncio.sleep(calm_s / 4)
        assert in_flight(limiter) == 2 and held[0].done(), "a freed slot of the share passes to the next one"
        await asyncio.sleep(calm_s)
        async with limiter.slot(deferrable=True), limiter.slot(deferrable=True):
            assert in_flight(limiter) == 4, "once urgent work has been quiet, any free slot will do"
        for released in releases:
            released.set()
        await asyncio.gather(*held)
        assert limiter._free == 8

    asyncio.run(go())


def test_a_cancelled_waiter_gives_back_nothing_it_did_not_hold() -> None:
    async def go() -> None:
        limiter, order = PriorityLimiter(1), []
        async with limiter.slot():
            waiter = asyncio.create_task(hold(limiter, order, "cancelled", deferrable=False))
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.sleep(0)
        await asyncio.wait_for(hold(limiter, order, "next", deferrable=True), timeout=1)
        assert order == ["next"]

    asyncio.run(go())


@given(
    limit=st.integers(1, 4),
    requests=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.booleans()), max_size=30),
)
def test_never_more_than_the_limit_at_once_and_every_request_is_served(
    limit: int, requests: list[tuple[bool, int, bool]]
) -> None:
    async def go() -> None:
        limiter, active, peak, served = PriorityLimiter(limit), [0], [0], []

        async def one(i: int, deferrable: bool, yields: int) -> None:
            async with limiter.slot(deferrable=deferrable):
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                try:
                    for _ in range(yields):
                        await asyncio.sleep(0)
                    served.append(i)
                finally:
                    active[0] -= 1

        tasks = [asyncio.create_task(one(i, d, y)) for i, (d, y, _) in enumerate(requests)]
        await asyncio.sleep(0)
        cancelled = {i for i, (_, _, cancel) in enumerate(requests) if cancel}
        for i in cancelled:
            tasks[i].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
        assert peak[0] <= limit
        assert set(range(len(requests))) - cancelled <= set(served)
        assert (limiter._free, limiter._urgent) == (limit, 0), "every slot came back"

    asyncio.run(go())
