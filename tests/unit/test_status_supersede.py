"""A status write that waited its turn behind a burst's creates gives way when news about its job
came meanwhile: the reconcile that follows decides from the status it would have written (so what
that recorded first goes out) and writes once. A superseded request is never sent."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from sealtune.adapters.kube import Credentials, KubeClient, Superseded
from sealtune.reconcile import Controller
from tests.support.controller import one_job

KEY = ("team-a", "tune")
BODY = {
    "apiVersion": "sealtune.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "tune", "namespace": "team-a", "resourceVersion": "1"},
}
Decide = Callable[[dict[str, Any]], dict[str, Any]]


def admitted(basis: dict[str, Any]) -> dict[str, Any]:
    return {**basis, "phase": "Pending", "timestamps": {"admittedAt": "2026-11-24T07:00:00Z"}}


def running(basis: dict[str, Any]) -> dict[str, Any]:
    # As compute_status does: what the basis recorded is kept, what was observed is new.
    return {**basis, "phase": "Running", "workers": {"active": 2}, "timestamps": basis.get("timestamps")}


class QueueingKube:
    """Holds each status write until its turn comes, then asks `superseded`, as the client does
    when a request gets its slot."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.turn = asyncio.Event()

    async def patch_status(self, *args: Any, superseded: Callable[[], bool] | None = None) -> dict[str, Any]:
        await self.turn.wait()
        if superseded is not None and superseded():
            raise Superseded
        self.sent.append(args[3])
        return {**BODY, "metadata": {**BODY["metadata"], "resourceVersion": str(len(self.sent) + 1)}}


class Reporting(Controller):
    """Each reconcile decides the next of `decisions` from the basis the controller gives it; the
    stored status stays empty (the fake stores nothing)."""

    def __init__(self, decisions: list[Decide], *, may_give_way: bool = True) -> None:
        super().__init__(**one_job(KEY, BODY, kube=QueueingKube(), emit=lambda body, **event: None))
        self.decisions, self.may_give_way = decisions, may_give_way

    async def reconcile(self, key: tuple[str, str]) -> None:
        if self.decisions:
            new = self.decisions.pop(0)(self._overtaken.get(key, {}))
            await self._write_status(key, BODY, {}, new, may_give_way=self.may_give_way)


async def news_while_waiting(controller: Reporting) -> list[dict[str, Any]]:
    kube: QueueingKube = controller.kube  # type: ignore[assignment]
    controller.trigger(KEY)
    run = controller._running[KEY]
    await asyncio.sleep(0)
    controller.trigger(KEY)  # a pod event arrives while the write waits
    kube.turn.set()
    await run
    return kube.sent


def test_a_waiting_write_gives_way_and_what_it_recorded_goes_out_with_the_newer_status() -> None:
    controller = Reporting([admitted, running])
    sent = asyncio.run(news_while_waiting(controller))
    assert sent == [running(admitted({}))], "one write, with the admission time first decided"
    assert sent[0]["timestamps"] == {"admittedAt": "2026-11-24T07:00:00Z"}
    assert controller._overtaken == {}, "written: nothing left to decide from"


def test_a_write_that_may_not_give_way_goes_out_as_decided() -> None:
    controller = Reporting([admitted, running], may_give_way=False)
    assert asyncio.run(news_while_waiting(controller)) == [admitted({}), running({})]


def test_the_client_sends_nothing_for_a_superseded_write_and_frees_its_slot() -> None:
    async def go() -> None:
        # Nothing listens on port 1: a request that were sent would fail to connect.
        kube = KubeClient(Credentials("https://127.0.0.1:1", ssl.create_default_context()), "t", 1)
        status = {"phase": "Running"}
        try:
            for _ in range(3):  # one slot: a slot kept by a superseded write would hang here
                with pytest.raises(Superseded):
                    await kube.patch_status(
                        "FineTuneJob", "tune", "team-a", status, "1", superseded=lambda: True
                    )
            assert kube.writes == 0
            with pytest.raises(OSError):
                await kube.patch_status(
                    "FineTuneJob", "tune", "team-a", status, "1", superseded=lambda: False
                )
        finally:
            await kube.close()

    asyncio.run(asyncio.wait_for(go(), 10))
