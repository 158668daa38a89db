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
