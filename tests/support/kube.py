"""Helpers tests use to drive and observe the cluster through kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sealtune.names import Workload, workload_namespace
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


def of_job(kubectl: Kubectl, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
    """The objects of ``kind`` that FineTuneJob namespace/name's workload has, wherever they are
    (its domain's workload namespace)."""
    selector = f"sealtune.dev/finetunejob={name},sealtune.dev/finetunejob-namespace={namespace}"
    return get(kubectl, kind, "-A", "-l", selector)["items"]  # type: ignore[no-any-return]


def pods_of(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return of_job(kubectl, "pods", namespace, name)


def workload_of(kubectl: Kubectl, namespace: str, name: str) -> Workload:
    """Where FineTuneJob namespace/name's workload lives and what its children are called."""
    job = get(kubectl, "ftj", name, "-n", namespace)
    domain = get(kubectl, "dd", job["spec"]["domainRef"]["name"])
    where = workload_namespace(domain["metadata"]["name"], domain["spec"].get("workloadNamespace"))
    return Workload.of(name, job["metadata"]["uid"], namespace, where)
