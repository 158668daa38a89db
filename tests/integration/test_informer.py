"""The operator's informer against the real API server: it lists, follows the watch (adds,
changes, relabels, deletions), and after a gap in which it watched nothing it lists again and
reports what vanished meanwhile as deleted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sealtune.adapters.informer import Informer
from sealtune.adapters.kube import KubeClient, load_credentials
from sealtune.names import LABEL_JOB
from tests.conftest import Kubectl


def config_map(namespace: str, name: str, job: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_JOB: job}},
        "data": {"v": value},
    }


async def eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


def test_informer_follows_lists_again_and_reports_what_vanished(
    kubeconfig: str, namespace: str, kubectl: Kubectl
) -> None:
    ns = namespace
    kubectl("apply", "-f", "-", input=json.dumps(config_map(ns, "a", "x", "1")))
    # Not ours: without the label it is never seen.
    kubectl("create", "configmap", "stranger", "-n", ns, "--from-literal=v=0")

    async def go() -> None:
        kube = KubeClient(load_credentials(kubeconfig), "sealtune-test")
        events: list[tuple[str, tuple[str, str]]] = []
        informer: Informer[str] = Informer(
            kube,
            "ConfigMap",
            label=LABEL_JOB,
            transform=lambda obj: obj["data"]["v"],
            on_event=lambda type, group: events.append((type, group)),
            namespaces=(ns,),
            page_size=1,  # every object on a page of its own: the paging is exercised
        )
        groups = informer.groups

        async def kubectl_async(*args: str, input: str | None = None) -> None:
            await asyncio.to_thread(kubectl, *args, input=input)

        def apply(obj: dict[str, Any]) -> Awaitable[None]:
            return kubectl_async("apply", "-f", "-", input=json.dumps(obj))

        try:
            task = asyncio.create_task(informer.run())
            await asyncio.wait_for(informer.synced.wait(), 20)
            assert dict(groups) == {(ns, "x"): ("1",)}
            assert events == [("ADDED", (ns, "x"))]

            await apply(config_map(ns, "b", "x", "2"))
            await eventually(lambda: sorted(groups.get((ns, "x"), ())) == ["1", "2"])
            await apply(config_map(ns, "b", "x", "3"))
            await eventually(lambda: sorted(groups.get((ns, "x"), ())) == ["1", "3"])
            # Relabelled to another job: it leaves the first one's view.
            await apply(config_map(ns, "b", "y", "3"))
            await eventually(lambda: groups.get((ns, "y")) == ("3",) and groups.get((ns, "x")) == ("1",))
            assert ("DELETED", (ns, "x")) in events
            await kubectl_async("delete", "configmap", "a", "-n", ns)
            await eventually(lambda: (ns, "x") not in groups)

            # A gap: nothing watches while b goes and c comes.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            events.clear()
            await kubectl_async("delete", "configmap", "b", "-n", ns)
            await apply(config_map(ns, "c", "z", "4"))
            task = asyncio.create_task(informer.run())
            await eventually(lambda: dict(groups) == {(ns, "z"): ("4",)})
            assert ("DELETED", (ns, "y")) in events and ("ADDED", (ns, "z")) in events
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await kube.close()

    asyncio.run(go())
