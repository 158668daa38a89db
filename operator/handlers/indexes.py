"""In-memory views of what the reconcile reads, kept current by kopf's watches, and the events
that trigger a reconcile. Each index holds a small summary, not whole objects. The index
functions are coroutines, though they never wait: kopf runs plain functions in a thread pool,
and the hop to a thread and back would cost more than the function."""

from __future__ import annotations

from typing import Any

import kopf

from .. import metrics
from ..api.v1alpha1 import GROUP, VERSION
from ..artifacts import ArtifactKeeper
from ..names import LABEL_JOB
from ..observe import observe_job, observe_pod
from ..reconcile import Controller, Packed, Snapshot, slim

OURS = {LABEL_JOB: kopf.PRESENT}


@kopf.index(GROUP, VERSION, "finetunejobs")
async def finetunejobs(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): Packed.of(body)}


@kopf.index(GROUP, VERSION, "datadomains")
async def datadomains(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {name: slim(body)}


@kopf.index("", "v1", "namespaces")
async def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {name: dict(labels)}


@kopf.index("batch", "v1", "jobs", labels=OURS)
async def batch_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB]): observe_job(dict(body))}


@kopf.index("", "v1", "pods", labels=OURS)
async def worker_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB]): observe_pod(dict(body))}


@kopf.index(GROUP, VERSION, "modelartifacts")
async def artifact_stages(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): (body.get("promotion") or {}).get("stage", "Candidate")}


def controller(memo: kopf.Memo, kwargs: dict[str, Any]) -> Controller:
    ctl: Controller = memo.controller
    if ctl.snapshot is None:
        # kopf injects each index by its function's name; they are live mappings.
        ctl.snapshot = Snapshot(
            finetunejobs=lambda: kwargs["finetunejobs"],
            batch_jobs=lambda: kwargs["batch_jobs"],
            pods=lambda: kwargs["worker_pods"],
            domains=lambda: kwargs["datadomains"],
            namespaces=lambda: kwargs["namespace_labels"],
        )
        metrics.STATE.bind(ctl.snapshot.finetunejobs, lambda: kwargs["artifact_stages"])
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


@kopf.on.event("batch", "v1", "jobs", labels=OURS)
async def batch_job_changed(
    memo: kopf.Memo, namespace: str | None, labels: kopf.Labels, type: str, **kwargs: Any
) -> None:
    ctl, key = controller(memo, kwargs), (namespace or "", labels[LABEL_JOB])
    if type == "DELETED":
        ctl.batch_job_gone(key)
    ctl.trigger_soon(key)


@kopf.on.event("", "v1", "pods", labels=OURS)
async def worker_pod_changed(
    memo: kopf.Memo, namespace: str | None, labels: kopf.Labels, **kwargs: Any
) -> None:
    controller(memo, kwargs).trigger_soon((namespace or "", labels[LABEL_JOB]))


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
