"""How the controller retries: with backoff on trouble that may pass, never on a refusal that
cannot (the API server calling what it sent invalid)."""

from __future__ import annotations

import asyncio
from typing import Any

from sealtune.adapters.kube import ApiError
from sealtune.reconcile import Controller, Packed, Snapshot
from sealtune.settings import Settings

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
            settings=Settings(),
            kube=None,  # type: ignore[arg-type]
            emit=lambda body, **event: self.events.append(event),
            custody=None,  # type: ignore[arg-type]
            publisher=None,  # type: ignore[arg-type]
            audit=None,  # type: ignore[arg-type]
            snapshot=Snapshot(
                finetunejobs=lambda: {KEY: [Packed.of(BODY)]},
                batch_jobs=dict,
                pods=dict,
                domains=dict,
                namespaces=dict,
            ),
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
