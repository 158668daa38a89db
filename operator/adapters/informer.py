"""The operator's own informers: list, then watch, one kind of object (under a label selector,
where one is given), keeping of each object only what a transform makes of it, grouped by the
FineTuneJob it belongs to.

For the kinds there are thousands of: FineTuneJobs, and the batch Jobs and pods each job has one
or more of. kopf would give each such object a worker, a memory and a queue of whole parsed
events; at thousands of jobs a burst of events then sat in those queues as tens of megabytes of
parsed JSON (hack/bench/operator_create.py under memray). Here each event is parsed, reduced
and dropped by the loop that reads the stream: a burst costs time, never memory.

The protocol is client-go's reflector: a paged list gives a consistent snapshot and its
resourceVersion; the watch goes on from there, with bookmarks; when that version has expired
(410 Gone) the kind is listed again and what vanished meanwhile is reported deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import aiohttp

from .kube import ApiError, KubeClient, resource_path

log = logging.getLogger(__name__)

V = TypeVar("V")
Group = tuple[str, str]
"""(namespace, name) of the FineTuneJob an object belongs to."""
ObjectKey = tuple[str, str]
"""(namespace, name) of the object itself."""
OnEvent = Callable[[str, Group], None]
"""Called with "ADDED", "MODIFIED" or "DELETED" and the group, after the store changed."""

WATCH_SECONDS = 300
"""The API server ends each watch after about this long (jittered, as client-go does) and the
informer resumes from its last version: a stream that died silently is noticed in time."""
MAX_BACKOFF_SECONDS = 30.0


class Expired(Exception):
    """The resourceVersion to resume from is gone from the API server's history."""


class Grouped(Mapping[Group, tuple[V, ...]]):
    """A read-only view: per FineTuneJob, the values of its objects."""

    def __init__(self, groups: dict[Group, dict[str, V]]) -> None:
        self._groups = groups

    def __getitem__(self, group: Group) -> tuple[V, ...]:
        return tuple(self._groups[group].values())

    def __iter__(self) -> Iterator[Group]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)


class Informer(Generic[V]):
    def __init__(
        self,
        kube: KubeClient,
        kind: str,
        *,
        label: str | None,
        namespace_label: str | None = None,
        transform: Callable[[dict[str, Any]], V],
        on_event: OnEvent,
        namespaces: tuple[str, ...] = (),
        page_size: int = 200,
    ) -> None:
        """Follows objects of ``kind`` that carry ``label`` (its value names their FineTuneJob),
        and, where ``namespace_label`` is given, carry the job's namespace in that label (a job's
        workload lives in its domain's namespace, not the job's own); or without a label every
        object of ``kind``, each a group of its own; in ``namespaces``
        or, when none are named, in all."""
        self._kube, self._kind, self._label = kube, kind, label
        self._namespace_label = namespace_label
        self._transform, self._on_event = transform, on_event
        self._namespaces, self._page_size = namespaces, page_size
        self._groups: dict[Group, dict[str, V]] = {}
        self._group_of: dict[ObjectKey, Group] = {}
        self._unlisted = len(namespaces) or 1
        self.synced = asyncio.Event()
        """Set once every namespace has been listed: until then the store is incomplete."""
        self.groups = Grouped(self._groups)

    async def run(self) -> None:
        """Keeps the store current until cancelled."""
        await asyncio.gather(*(self._follow(ns) for ns in self._namespaces or (None,)))

    def apply(self, type: str, obj: dict[str, Any]) -> None:
        """One watch event (or listed object) into the store, then the callback."""
        metadata = obj["metadata"]
        key = (metadata.get("namespace") or "", metadata["name"])
        if type == "DELETED":
            group = self._drop(key)
        else:
            group = key if self._label is None else self._group(key[0], metadata.get("labels") or {})
            old = self._group_of.get(key)
            if old is not None and old != group:
                self._drop(key)  # relabelled to another job: it leaves the old one
                self._on_event("DELETED", old)
            self._groups.setdefault(group, {})[key[1]] = self._transform(obj)
            self._group_of[key] = group
        if group is not None:
            self._on_event(type, group)

    def _group(self, namespace: str, labels: Mapping[str, str]) -> Group:
        assert self._label is not None
        if self._namespace_label is not None:
            namespace = labels.get(self._namespace_label, "")
        return (namespace, labels.get(self._label, ""))

    def _drop(self, key: ObjectKey) -> Group | None:
        group = self._group_of.pop(key, None)
        if group is not None:
            members = self._groups[group]
            members.pop(key[1], None)
            if not members:
                del self._groups[group]
        return group

    async def _follow(self, namespace: str | None) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._relist(namespace)
                    if not self.synced.is_set():
                        self._unlisted -= 1
                        if not self._unlisted:
                            self.synced.set()
                version = await self._watch(namespace, version)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Expired:
                version = None
            except Exception as error:
                # Trouble with the API server passes; anything else is a bug, said loudly. Either
                # way the informer goes on: a dead one would leave the reconcile a stale view.
                failures += 1
                delay = min(2.0**failures, MAX_BACKOFF_SECONDS)
                known = isinstance(error, ApiError | aiohttp.ClientError | OSError | TimeoutError)
                log.log(
                    logging.WARNING if known else logging.ERROR,
                    "watching %s in %s failed (%s); again in %.0f s",
                    self._kind,
                    namespace or "all namespaces",
                    error,
                    delay,
                    exc_info=not known,
                )
                await asyncio.sleep(delay)

    async def _relist(self, namespace: str | None) -> str:
        """Lists in pages of one consistent snapshot, storing each object as its page arrives
        (a page, not the whole list, is what is held parsed), then drops what the snapshot
        lacks; returns the snapshot's resourceVersion."""
        listed: set[ObjectKey] = set()
        params = {"limit": str(self._page_size)}
        if self._label is not None:
            params["labelSelector"] = self._label
        while True:
            try:
                page = await self._kube.request("GET", resource_path(self._kind, namespace), params=params)
            except ApiError as error:
                if error.status == 410:
                    raise Expired from error  # the continue token outlived the snapshot
                raise
            for obj in page.get("items") or ():
                metadata = obj["metadata"]
                key = (metadata.get("namespace") or "", metadata["name"])
                self.apply("MODIFIED" if key in self._group_of else "ADDED", obj)
                listed.add(key)
            token = page["metadata"].get("continue")
            if not token:
                break
            params = {**params, "continue": token}
        gone = [k for k in self._group_of if (namespace is None or k[0] == namespace) and k not in listed]
        for key in gone:
            group = self._drop(key)
            if group is not None:
                self._on_event("DELETED", group)
        return str(page["metadata"]["resourceVersion"])

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Applies events from ``version`` on until the API server ends the watch; returns the
        version to resume from."""
        seconds = int(WATCH_SECONDS * (1 + random.random()))  # noqa: S311
        async for event in self._kube.watch(
            self._kind,
            label_selector=self._label,
            resource_version=version,
            namespace=namespace,
            timeout_seconds=seconds,
        ):
            obj = event["object"]
            if event["type"] == "ERROR":
                if obj.get("code") == 410:
                    raise Expired
                raise ApiError(int(obj.get("code") or 500), obj)
            if event["type"] != "BOOKMARK":
                self.apply(event["type"], obj)
            version = obj["metadata"]["resourceVersion"]
        return version
