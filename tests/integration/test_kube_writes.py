"""The operator's client writes against the real API server: a child believed new is created,
one that exists is applied, and fields its create set are handed to the apply, so that a field
the desired object drops is removed as if every write had been an apply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sealtune.adapters.kube import Conflict, KubeClient, load_credentials

pytestmark = pytest.mark.integration

MANAGER = "sealtune-test"


def config_map(namespace: str, data: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": namespace, "labels": labels},
        "data": data,
    }


def ours(obj: dict[str, Any]) -> list[tuple[str, str | None]]:
    return sorted(
        (e["operation"], e.get("subresource"))
        for e in obj["metadata"]["managedFields"]
        if e["manager"] == MANAGER
    )


def test_created_fields_are_handed_to_the_apply_that_drops_them(kubeconfig: str, namespace: str) -> None:
    async def go() -> None:
        kube = KubeClient(load_credentials(kubeconfig), MANAGER)
        try:
            await kube.create_or_apply(config_map(namespace, {"a": "1", "b": "2"}, {"x": "1", "y": "2"}))
            created = await kube.get("ConfigMap", "child", namespace)
            assert created is not None
            assert ours(created) == [("Update", None)]

            # A merge patch of ours is handed over too; another manager's field is not ours.
            await kube.merge_patch("ConfigMap", "child", namespace, {"data": {"patched": "3"}})
            other = KubeClient(load_credentials(kubeconfig), "someone-else")
            try:
                await other.merge_patch("ConfigMap", "child", namespace, {"data": {"kept": "4"}})
            finally:
                await other.close()

            applied = await kube.apply(config_map(namespace, {"a": "10"}, {"x": "1"}))
            assert applied["data"] == {"a": "10", "kept": "4"}
            assert applied["metadata"]["labels"] == {"x": "1"}
            assert ours(applied) == [("Apply", None)]

            # Already handed over: the next apply is one request, and removes as usual.
            writes = kube.writes
            applied = await kube.apply(config_map(namespace, {"a": "10", "c": "5"}, {}))
            assert kube.writes == writes + 1
            assert applied["data"] == {"a": "10", "c": "5", "kept": "4"}
            assert not applied["metadata"].get("labels")
        finally:
            await kube.close()

    asyncio.run(go())


def test_a_child_that_exists_is_applied_not_created_twice(kubeconfig: str, namespace: str) -> None:
    async def go() -> None:
        kube = KubeClient(load_credentials(kubeconfig), MANAGER)
        try:
            await kube.apply(config_map(namespace, {"a": "1"}, {}))
            await kube.create_or_apply(config_map(namespace, {"a": "2"}, {}))
            current = await kube.get("ConfigMap", "child", namespace)
            assert current is not None
            assert current["data"] == {"a": "2"}
            assert ours(current) == [("Apply", None)]
        finally:
            await kube.close()

    asyncio.run(go())


def test_a_hand_over_computed_from_an_old_version_is_refused(kubeconfig: str, namespace: str) -> None:
    """A write between the apply and the hand-over could carry fields the hand-over does not
    know of: the patch names the version it was made from, and fails on any other."""
    from sealtune.adapters.kube import _hand_over_updates, resource_path

    async def go() -> None:
        kube = KubeClient(load_credentials(kubeconfig), MANAGER)
        try:
            await kube.create(config_map(namespace, {"a": "1"}, {}))
            seen = await kube.get("ConfigMap", "child", namespace)
            assert seen is not None
            patch = _hand_over_updates(seen, MANAGER)
            assert patch is not None
            await kube.merge_patch("ConfigMap", "child", namespace, {"data": {"b": "2"}})
            with pytest.raises(Conflict):
                await kube.request(
                    "PATCH",
                    resource_path("ConfigMap", namespace, "child"),
                    body=patch,
                    content_type="application/json-patch+json",
                )
        finally:
            await kube.close()

    asyncio.run(go())
