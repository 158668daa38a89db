"""In-memory views of what the reconcile reads, and the events that trigger a reconcile. Each
view holds a small summary, not whole objects.

The jobs' batch Jobs and pods, a job's many objects, come from the operator's own informers
(adapters/informer.py); the rest from kopf's watches and indexes. The index functions are
coroutines, though they never wait: kopf runs plain functions in a thread pool, and the hop to
a thread and back would cost more than the function."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from .. import metrics
from ..adapters.informer import Informer
from ..api.v1alpha1 import GROUP, VERSION
from ..artifacts import ArtifactKeeper
from ..names import LABEL_JOB
from ..observe import observe_job, observe_pod
from ..reconcile import Controller, Packed, Snapshot, slim


@kopf.index(GROUP, VERSION, "finetunejobs")
async def finetunejobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): Packed.of(body)}


@kopf.index(GROUP, VERSION, "datadomains")
async def datadomains(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {name: slim(body)}


@kopf.index("", "v1", "namespaces")
async def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {name: dict(labels)}


@kopf.index(GROUP, VERSION, "modelartifacts")
async def artifact_stages(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): (body.get("promotion") or {}).get("stage", "Candidate")}


async def start_informers(memo: kopf.Memo) -> None:
    """Starts the batch Jobs' and pods' informers and returns once both have listed: no
    reconcile may read them half-filled (kopf's own indexes hold its handlers back likewise)."""
    ctl: Controller = memo.controller
    namespaces = memo.settings.namespaces

    def batch_job_changed(type: str, key: tuple[str, str]) -> None:
        if type == "DELETED":
            ctl.batch_job_gone(key)
        ctl.trigger_soon(key)

    def pod_changed(type: str, key: tuple[str, str]) -> None:
        ctl.trigger_soon(key)

    memo.batch_jobs = Informer(
        ctl.kube,
        "Job",
        label=LABEL_JOB,
        transform=observe_job,
        on_event=batch_job_changed,
        namespaces=namespaces,
    )
    memo.pods = Informer(
        ctl.kube, "Pod", label=LABEL_JOB, transform=observe_pod, on_event=pod_changed, namespaces=namespaces
    )
    memo.informing = [asyncio.create_task(i.run()) for i in (memo.batch_jobs, memo.pods)]
    await asyncio.gather(memo.batch_jobs.synced.wait(), memo.pods.synced.wait())


async def stop_informers(memo: kopf.Memo) -> None:
    for task in memo.informing:
        task.cancel()
    await asyncio.gather(*memo.informing, return_exceptions=True)


def controller(memo: kopf.Memo, kwargs: dict[str, Any]) -> Controller:
    ctl: Controller = memo.controller
    if ctl.snapshot is None:
        # kopf injects each index by its function's name; they are live mappings.
        snapshot = Snapshot(
            finetunejobs=lambda: kwargs["finetunejobs"],
            batch_jobs=lambda: memo.batch_jobs.groups,
            pods=lambda: memo.pods.groups,
            domains=lambda: kwargs["datadomains"],
            namespaces=lambda: kwargs["namespace_labels"],
        )
        ctl.bind(snapshot)
        metrics.STATE.bind(snapshot.finetunejobs, lambda: kwargs["artifact_stages"])
    return ctl


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_changed(
    memo: kopf.Memo, namespace: str | None, name: str, type: str, meta: kopf.Meta, **kwargs: Any
) -> None:
    ctl, key = controller(memo, kwargs), (namespace or "", name)
    if type == "DELETED":
        ctl.forget(key)
    elif not ctl.is_own_write(key, meta["resourceVersion"]):
        ctl.trigger(key)


@kopf.on.event(GROUP, VERSION, "datadomains")
async def datadomain_changed(memo: kopf.Memo, name: str, **kwargs: Any) -> None:
    ctl = controller(memo, kwargs)
    for key, store in kwargs["finetunejobs"].items():
        if any(packed.domain == name for packed in store):
            ctl.trigger(key)


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(memo: kopf.Memo, name: str, type: str, **kwargs: Any) -> None:
    if not type:
        return  # the initial listing: the jobs' own listing triggers them
    ctl = controller(memo, kwargs)
    for key in list(kwargs["finetunejobs"].keys()):
        if key[0] == name:
            ctl.trigger(key)


@kopf.on.event(GROUP, VERSION, "modelartifacts")
async def modelartifact_changed(memo: kopf.Memo, body: kopf.Body, type: str, **_: Any) -> None:
    keeper: ArtifactKeeper = memo.artifacts
    meta = body["metadata"]
    if type == "DELETED":
        keeper.forget(meta["namespace"], meta["name"], meta.get("uid"))
        return
    await keeper.changed(dict(body))
