"""Helpers tests use to drive and observe the cluster through kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Kubectl


def wait_for(predicate: Callable[[], Any], timeout: float = 90, interval: float = 0.5) -> Any:
    """Polls ``predicate`` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    )


def get(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def condition(kubectl: Kubectl, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    status = get(kubectl, "ftj", name, "-n", namespace).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def wait_condition(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    type_: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 90,
) -> dict[str, Any]:
    def met() -> dict[str, Any] | None:
        found = condition(kubectl, namespace, name, type_)
        if found and found["status"] == status and (reason is None or found["reason"] == reason):
            return found
        return None

    return wait_for(met, timeout)  # type: ignore[no-any-return]


def pods_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return get(kubectl, "pods", "-n", namespace, "-l", f"sealtune.dev/finetunejob={name}")["items"]  # type: ignore[no-any-return]
