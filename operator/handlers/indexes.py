"""In-memory views of what the reconcile reads, and the events that trigger a reconcile. Each
view holds a small summary, not whole objects.

FineTuneJobs and their batch Jobs and pods, the kinds there are thousands of, come from the
operator's own informers (adapters/informer.py); the few domains, namespaces and artifacts from
kopf's watches and indexes. The index functions are coroutines, though they never wait: kopf
runs plain functions in a thread pool, and the hop to a thread and back would cost more than
the function."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from .. import metrics
from ..adapters.informer import Informer, OnEvent
from ..adapters.kube import KubeClient, NotFound
from ..api.v1alpha1 import GROUP, VERSION
from ..artifacts import ArtifactKeeper
from ..names import LABEL_JOB, LABEL_JOB_NAMESPACE
from ..observe import observe_job, observe_pod, observe_workload
from ..reconcile import Controller, Packed, Snapshot, slim
from ..releases import Releaser

log = logging.getLogger(__name__)
KUEUE_API = "kueue.x-k8s.io/v1beta2"


@kopf.index(GROUP, VERSION, "datadomains")
async def datadomains(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {name: slim(body)}


@kopf.index("", "v1", "namespaces")
async def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {name: dict(labels)}


@kopf.index(GROUP, VERSION, "modelartifacts")
async def artifact_stages(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): (body.get("promotion") or {}).get("stage", "Candidate")}


async def serves_kueue(kube: KubeClient) -> bool:
    """Whether Kueue's API is installed (then its Workloads are watched; a Kueue installed later
    is seen after the operator restarts)."""
    try:
        await kube.request("GET", f"/apis/{KUEUE_API}")
    except NotFound:
        log.info("Kueue's API (%s) is not served: queued jobs show no Workload", KUEUE_API)
        return False
    return True


async def start_informers(memo: kopf.Memo) -> None:
    """Starts the FineTuneJobs', batch Jobs', pods' (and Kueue Workloads') informers and returns once all have
    listed: no reconcile may read them half-filled (kopf's own indexes hold its handlers back
    likewise)."""
    ctl: Controller = memo.controller
    namespaces = memo.settings.namespaces

    def finetunejob_changed(type: str, key: tuple[str, str]) -> None:
        if type == "DELETED":
            ctl.forget(key)
        elif not ctl.is_own_write(key, memo.finetunejobs.groups[key][0].version):
            ctl.trigger(key)

    def batch_job_changed(type: str, key: tuple[str, str]) -> None:
        if type == "DELETED":
            ctl.batch_job_gone(key)
        ctl.trigger_soon(key)

    def pod_changed(type: str, key: tuple[str, str]) -> None:
        """Also a Workload's change: either is news of the workload, not of the job."""
        ctl.trigger_soon(key)

    memo.finetunejobs = Informer(
        ctl.kube,
        "FineTuneJob",
        label=None,
        transform=Packed.of,
        on_event=finetunejob_changed,
        namespaces=namespaces,
    )

    # A job's workload lives in its domain's workload namespace, wherever the job is: the
    # workload informers watch every namespace (the label selects), and the reconcile counts
    # only what is in the job's workload namespace and carries its uid.
    def of_workloads(
        kind: str, transform: Callable[[dict[str, Any]], Any], on_event: OnEvent
    ) -> Informer[Any]:
        return Informer(
            ctl.kube,
            kind,
            label=LABEL_JOB,
            namespace_label=LABEL_JOB_NAMESPACE,
            transform=transform,
            on_event=on_event,
        )

    memo.batch_jobs = of_workloads("Job", observe_job, batch_job_changed)
    memo.pods = of_workloads("Pod", observe_pod, pod_changed)
    informers = [memo.finetunejobs, memo.batch_jobs, memo.pods]
    memo.queues = None
    if await serves_kueue(ctl.kube):
        # Kueue copies the Job's sealtune labels onto its Workload (integrations.labelKeysToCopy).
        memo.queues = of_workloads("Workload", observe_workload, pod_changed)
        informers.append(memo.queues)
    memo.informing = [asyncio.create_task(i.run()) for i in informers]
    await asyncio.gather(*(i.synced.wait() for i in informers))
    memo.informing.append(asyncio.create_task(count_domain_jobs(ctl)))


async def count_domain_jobs(ctl: Controller) -> None:
    """Each DataDomain's status.jobsUsing, counted once a minute (written only when it moved)
    rather than on every job's arrival, which would double the writes of a burst of jobs."""
    while True:
        await asyncio.sleep(DOMAIN_COUNT_SECONDS)
        if ctl.snapshot is None:
            continue  # not bound yet, or standing by
        for store in list(ctl.snapshot.domains().values()):
            for body in list(store):
                await ctl.domain_changed(body)


async def stop_informers(memo: kopf.Memo) -> None:
    for task in memo.informing:
        task.cancel()
    await asyncio.gather(*memo.informing, return_exceptions=True)


DOMAIN_COUNT_SECONDS = 60


def controller(memo: kopf.Memo, kwargs: dict[str, Any]) -> Controller:
    """The controller, bound to its views by the first kopf handler that runs: kopf runs none
    before its indexes are filled (nor while peering holds this replica paused). Then every
    job is reconciled; until then the informers' triggers are ignored."""
    ctl: Controller = memo.controller
    if ctl.snapshot is None:
        # kopf injects each index by its function's name; they are live mappings.
        snapshot = Snapshot(
            finetunejobs=lambda: memo.finetunejobs.groups,
            batch_jobs=lambda: memo.batch_jobs.groups,
            pods=lambda: memo.pods.groups,
            queues=lambda: memo.queues.groups if memo.queues is not None else {},
            domains=lambda: kwargs["datadomains"],
            namespaces=lambda: kwargs["namespace_labels"],
        )
        ctl.bind(snapshot)
        metrics.STATE.bind(snapshot.finetunejobs, lambda: kwargs["artifact_stages"])
        for key in list(memo.finetunejobs.groups):
            ctl.trigger(key)
    return ctl


@kopf.on.event(GROUP, VERSION, "datadomains")
async def datadomain_changed(memo: kopf.Memo, name: str, type: str, body: kopf.Body, **kwargs: Any) -> None:
    ctl = controller(memo, kwargs)
    if type != "DELETED":
        await ctl.domain_changed(body)
    if not type:
        return  # the initial listing: binding the controller reconciled every job
    for key, store in list(memo.finetunejobs.groups.items()):
        if any(packed.domain == name for packed in store):
            ctl.trigger(key)


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(memo: kopf.Memo, name: str, type: str, **kwargs: Any) -> None:
    ctl = controller(memo, kwargs)
    if not type:
        return  # the initial listing: binding the controller reconciled every job
    for key in list(memo.finetunejobs.groups):
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
    releaser: Releaser = memo.releases
    releaser.changed(dict(body))
