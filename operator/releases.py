"""Release of weights: who may obtain an artifact's files, in which stage, and where they go.

A request is appended to an artifact's promotion.releases by the user who asks (sealtune
export), under their own name and groups, with the verb ``release`` on modelartifacts/promotion
(admission checks all three: builders/result_admission.py). The operator then decides it under
the artifact's DataDomain's spec.release, never under anything the request says about itself:

- the stage must be one the domain releases in (none, by default: the weights stay in the domain);
- the destination must be one the domain names, open to the artifact's namespace and, where the
  destination lists groups, to one of the requester's groups;
- the artifact must verify with the operator's key at that moment.

An allowed request runs a release pod (builders/release.py) that copies the signed files, each
rehashed, to the destination claim. Every decision and every copy's outcome is in the audit log;
the outcome is also in status.releases, at the request's index. Tenants hold nothing in the
workload namespace, so this is the only way the files leave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import metrics, threads
from .adapters.kube import ApiError, Conflict, KubeClient
from .adapters.vault import VaultProblem
from .api.v1alpha1 import DataDomain, ModelArtifact
from .api.v1alpha1.datadomain import ReleaseDestination
from .api.v1alpha1.modelartifact import ReleaseRequest
from .artifacts import key_check
from .audit import AuditError, AuditLog, Event, Subject
from .builders.meta import domain_namespace
from .builders.release import (
    CONTAINER,
    DEADLINE_SECONDS,
    LABEL_RELEASE_OF,
    job_name,
    release_config_map,
    release_job,
)
from .keys import OperatorKeys
from .settings import Settings
from .signing import SigningError

log = logging.getLogger(__name__)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
POLL_SECONDS = 2.0
STATUS_ATTEMPTS = 5


@dataclass(frozen=True)
class Verdict:
    """The decision on one request; ``destination`` is set when it is allowed."""

    reason: str
    message: str
    destination: ReleaseDestination | None = None

    @property
    def allowed(self) -> bool:
        return self.destination is not None


def judge(
    artifact: ModelArtifact, request: ReleaseRequest, domain: DataDomain | None, problems: list[str]
) -> Verdict:
    """The domain's rule applied to one request. ``problems``: what the artifact's verification
    with the operator's key found (none: it verifies)."""
    source = artifact.spec.source.domain
    if domain is None or domain.metadata.get("uid") != source.uid:
        return Verdict(
            "DomainGone",
            f"DataDomain {source.name} (uid {source.uid}), whose rule decides releases of this "
            "artifact, no longer exists; nothing is released",
        )
    rule, name, stage = domain.spec.release, domain.metadata["name"], artifact.promotion.stage
    if not rule.stages:
        return Verdict(
            "ReleaseForbidden",
            f"DataDomain {name} keeps its weights in the domain (spec.release.stages is empty); "
            "a domain admin decides whether its artifacts may leave",
        )
    if stage not in rule.stages:
        return Verdict(
            "StageNotReleased",
            f"the artifact is {stage}; DataDomain {name} releases files only in stage "
            f"{', '.join(rule.stages)} (spec.release.stages)",
        )
    destination = next((d for d in rule.destinations if d.name == request.destination), None)
    if destination is None:
        known = ", ".join(d.name for d in rule.destinations)
        return Verdict(
            "UnknownDestination",
            f"DataDomain {name} has no release destination {request.destination}; it names {known}",
        )
    namespace = artifact.metadata["namespace"]
    if destination.namespaces and namespace not in destination.namespaces:
        return Verdict(
            "NamespaceNotAllowed",
            f"release destination {destination.name} of DataDomain {name} takes artifacts of "
            f"namespaces {', '.join(destination.namespaces)}, not {namespace}",
        )
    if destination.groups and not set(destination.groups) & set(request.groups):
        return Verdict(
            "GroupNotAllowed",
            f"release destination {destination.name} of DataDomain {name} is for members of "
            f"{', '.join(destination.groups)}; {request.requester} is in none of them",
        )
    if problems:
        return Verdict("NotVerified", "the artifact does not verify: " + "; ".join(problems)[:800])
    return Verdict("Allowed", f"to {destination.name} under DataDomain {name}'s spec.release", destination)


def pending(body: Mapping[str, Any]) -> list[int]:
    """Indexes of the requests that have no outcome yet."""
    requests = (body.get("promotion") or {}).get("releases") or []
    decided = {o.get("index") for o in (body.get("status") or {}).get("releases") or []}
    return [i for i in range(len(requests)) if i not in decided]


def true_conditions(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A batch Job's conditions that hold, by type."""
    return {
        c["type"]: c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
    }


def copy_outcome(job: Mapping[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """(phase, reason, report) of a finished release Job, from the termination message of the
    pod it controls (a pod of anyone else counts for nothing)."""
    uid = job["metadata"]["uid"]
    report: dict[str, Any] = {}
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == uid and o.get("controller") for o in owners):
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") == CONTAINER and terminated.get("message"):
                try:
                    report = json.loads(terminated["message"])
                except ValueError:
                    report = {"message": "the release pod reported no readable outcome"}
    conditions = true_conditions(job)
    if "Complete" in conditions and report.get("ok"):
        return "Released", "Released", report
    reason = str(report.get("reason") or (conditions.get("Failed") or {}).get("reason") or "ReleaseFailed")
    message = str(report.get("message") or (conditions.get("Failed") or {}).get("message") or "")
    return "Failed", reason, {"message": message}


@dataclass
class Releaser:
    settings: Settings
    kube: KubeClient
    keys: OperatorKeys
    audit: AuditLog
    _busy: set[tuple[str, int]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def changed(self, body: Mapping[str, Any]) -> None:
        """Starts deciding each request that has no outcome and is not being decided."""
        uid = body["metadata"]["uid"]
        for index in pending(body):
            if (uid, index) in self._busy:
                continue
            self._busy.add((uid, index))
            task = asyncio.get_running_loop().create_task(self._decide(dict(body), index))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _decide(self, body: dict[str, Any], index: int) -> None:
        meta = body["metadata"]
        try:
            await self._run(body, index)
        except (ApiError, OSError, TimeoutError, VaultProblem, SigningError, AuditError) as error:
            # Nothing recorded as decided: the artifact's next event (or a restart) tries again.
            log.warning(
                "release %d of artifact %s/%s not decided yet: %s",
                index,
                meta["namespace"],
                meta["name"],
                error,
            )
        finally:
            self._busy.discard((meta["uid"], index))

    async def _run(self, body: dict[str, Any], index: int) -> None:
        artifact = ModelArtifact.model_validate(body)
        request = artifact.promotion.releases[index]
        source = artifact.spec.source.domain
        found = await self.kube.get("DataDomain", source.name)
        domain = DataDomain.model_validate(found) if found is not None else None
        signer = await self.keys.signer()
        _, problems = await threads.run_in(
            threads.SIGNING, key_check, body, signer.key_id, signer.public_key_pem
        )
        verdict = judge(artifact, request, domain, problems)
        decision = {
            "index": index,
            "requester": request.requester,
            "groups": list(request.groups),
            "destination": request.destination,
            "reason": request.reason,
            "stage": artifact.promotion.stage,
            "manifestDigest": artifact.spec.digests.manifest,
        }
        subject = Subject.of(body)
        if domain is None or verdict.destination is None:
            await self.audit.record(
                Event.RELEASE, subject, {**decision, "decision": "Refused", "why": verdict.reason}
            )
            await self._write(
                body, index, {"phase": "Refused", "reason": verdict.reason, "message": verdict.message}
            )
            metrics.release_decided("Refused")
            return
        # Recorded before a byte moves: a release the log does not hold never happens.
        await self.audit.record(Event.RELEASE, subject, {**decision, "decision": "Allowed"})
        outcome = await self._copy(artifact, index, domain, verdict.destination)
        await self.audit.record(Event.RELEASE, subject, {**decision, "decision": outcome["phase"], **outcome})
        await self._write(body, index, outcome)
        metrics.release_decided(outcome["phase"])

    async def _copy(
        self, artifact: ModelArtifact, index: int, domain: DataDomain, destination: ReleaseDestination
    ) -> dict[str, Any]:
        namespace, name = domain_namespace(domain), job_name(artifact, index)
        where = {"claimName": destination.claim_name}
        if await self.kube.get("PersistentVolumeClaim", destination.claim_name, namespace) is None:
            return {
                "phase": "Failed",
                "reason": "DestinationMissing",
                "message": f"claim {destination.claim_name} of release destination {destination.name} "
                f"is not in namespace {namespace}; a cluster admin provisions it",
                **where,
            }
        try:
            job = await self.kube.create(release_job(artifact, index, domain, destination, self.settings))
        except Conflict:
            job = await self.kube.get("Job", name, namespace) or {}
            labels = (job.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_RELEASE_OF) != artifact.metadata["uid"]:
                return {
                    "phase": "Failed",
                    "reason": "JobConflict",
                    "message": f"Job {namespace}/{name} is not this release's",
                    **where,
                }
        with contextlib.suppress(Conflict):  # made by an earlier attempt, for this Job
            await self.kube.create(release_config_map(artifact, index, domain, job))
        finished = await self._wait(job)
        pods = await self.kube.list(
            "Pod", namespace, label_selector=f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
        )
        phase, reason, report = copy_outcome(finished, pods)
        await self.kube.delete("Job", name, namespace)  # its pod and ConfigMap go with it
        if phase != "Released":
            return {"phase": phase, "reason": reason, "message": report.get("message", "")[:1024], **where}
        return {
            "phase": phase,
            "reason": reason,
            "message": f"{report.get('files')} files and the signature bundle, each file rehashed",
            **where,
            "path": f"{destination.path}/{report.get('directory')}".removeprefix("./"),
            "files": int(report.get("files") or 0),
            "bytes": int(report.get("bytes") or 0),
        }

    async def _wait(self, job: Mapping[str, Any]) -> dict[str, Any]:
        meta = job["metadata"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS + 60
        while loop.time() < deadline:
            current = await self.kube.get("Job", meta["name"], meta["namespace"])
            if current is None or current["metadata"]["uid"] != meta["uid"]:
                raise TimeoutError(f"release Job {meta['namespace']}/{meta['name']} disappeared")
            if true_conditions(current).keys() & {"Complete", "Failed"}:
                return current
            await asyncio.sleep(POLL_SECONDS)
        raise TimeoutError(f"release Job {meta['namespace']}/{meta['name']} did not finish")

    async def _write(self, body: Mapping[str, Any], index: int, outcome: Mapping[str, Any]) -> None:
        """Adds the outcome to status.releases, from a fresh read on each conflict."""
        meta = body["metadata"]
        entry = {"index": index, **outcome, "decidedAt": datetime.now(UTC).strftime(TIME_FORMAT)}
        for _ in range(STATUS_ATTEMPTS):
            current = await self.kube.get("ModelArtifact", meta["name"], meta["namespace"])
            if current is None or current["metadata"]["uid"] != meta["uid"]:
                return
            releases = [
                o for o in (current.get("status") or {}).get("releases") or [] if o.get("index") != index
            ]
            try:
                await self.kube.patch_status(
                    "ModelArtifact",
                    meta["name"],
                    meta["namespace"],
                    {"releases": sorted([*releases, entry], key=lambda o: int(o["index"]))},
                    current["metadata"]["resourceVersion"],
                )
                return
            except Conflict:
                continue
        raise Conflict(409, f"status of {meta['namespace']}/{meta['name']} kept changing")
