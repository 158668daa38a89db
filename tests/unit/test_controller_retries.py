"""How the controller retries: with backoff on trouble that may pass, never on a refusal that
cannot (the API server calling what it sent invalid)."""

from __future__ import annotations

import asyncio
from typing import Any

from sealtune.adapters.kube import ApiError
from sealtune.reconcile import Controller
from tests.support.controller import one_job

KEY = ("team-a", "tune")
BODY = {
    "apiVersion": "sealtune.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "tune", "namespace": "team-a"},
}


class Failing(Controller):
    def __init__(self, error: Exception) -> None:
        self.events: list[dict[str, Any]] = []
        super().__init__(
            **one_job(KEY, BODY, kube=None, emit=lambda body, **event: self.events.append(event))
        )
        self.error, self.calls = error, 0

    async def reconcile(self, key: tuple[str, str]) -> None:
        self.calls += 1
        raise self.error


def run(controller: Failing) -> None:
    async def go() -> None:
        await controller._run(KEY)
        for timer in controller._timers.values():
            timer.cancel()

    asyncio.run(go())


def test_an_invalid_request_is_reported_once_and_not_retried() -> None:
    controller = Failing(ApiError(422, {"message": "spec.x: Invalid value", "reason": "Invalid"}))
    run(controller)
    assert controller.calls == 1
    assert KEY not in controller._timers, "a refusal that cannot pass must not be retried"
    assert [e["reason"] for e in controller.events] == ["ReconcileRefused"]
    assert "spec.x" in controller.events[0]["message"]


def test_trouble_that_may_pass_is_retried_with_backoff() -> None:
    controller = Failing(ApiError(503, {"message": "etcd leader changed"}))
    run(controller)
    assert KEY in controller._timers and controller._failures[KEY] == 1
    assert controller.events == []


class StatusKube:
    async def patch_status(self, *_: Any, **__: Any) -> dict[str, Any]:
        return {**BODY, "metadata": {**BODY["metadata"], "resourceVersion": "2"}}


class Finishing(Failing):
    """Writes a new phase on its first pass; nothing to do on the next."""

    def __init__(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        super().__init__(RuntimeError("unused"))
        self.kube = StatusKube()  # type: ignore[assignment]
        self.statuses = (old, new)

    async def reconcile(self, key: tuple[str, str]) -> None:
        self.calls += 1
        if self.calls == 1:
            body = {**BODY, "metadata": {**BODY["metadata"], "resourceVersion": "1"}}
            await self._write_status(key, body, *self.statuses)


def test_a_new_phase_is_reconciled_again_without_waiting_for_the_echo_of_its_write() -> None:
    """The watch event of our own write triggers nothing, and a finished job's deletions and
    publication happen in the reconcile that sees it finished: the controller runs it at once."""
    finishing = Finishing({"phase": "Running"}, {"phase": "Succeeded"})
    asyncio.run(finishing._run(KEY))
    assert finishing.calls == 2
    assert finishing.is_own_write(KEY, "2"), "the echo of the write is recognised"


def test_a_status_write_within_a_phase_needs_no_second_pass() -> None:
    same = Finishing({"phase": "Running"}, {"phase": "Running", "progress": {"step": 5}})
    asyncio.run(same._run(KEY))
    assert same.calls == 1


def test_an_unforeseen_error_is_logged_and_retried_not_left_to_kill_the_reconcile(caplog: Any) -> None:
    controller = Failing(KeyError("an answer nobody foresaw"))
    run(controller)
    assert KEY in controller._timers and controller._failures[KEY] == 1
    assert "failed unexpectedly" in caplog.text
