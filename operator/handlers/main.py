"""`sealtune-operator`: configures kopf and runs the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf

from .. import metrics
from ..adapters import webhook_tls
from ..adapters.kube import KubeClient, NotFound, load_credentials
from ..adapters.vault import VaultAdmin
from ..artifacts import ArtifactKeeper
from ..audit import AuditLog
from ..builders import result_admission
from ..builders.admission import self_subject_review, username_from_self_subject_review, workload_policies
from ..custody import Custody
from ..keys import OperatorKeys
from ..names import ANNOTATION_REQUESTED_BY
from ..publication import Publisher
from ..reconcile import Controller
from ..releases import Releaser
from ..settings import Settings
from .indexes import start_informers, stop_informers

log = logging.getLogger("sealtune")

ADMISSION_CONCURRENCY = 8
"""Reads the webhook may have in flight at once (each admission review makes two)."""


def emit(body: Any, *, type: str, reason: str, message: str) -> None:
    # kopf posts Events from a queue, in the background, bounded; messages are cut to 1 KiB.
    kopf.event(dict(body), type=type, reason=reason, message=message[:1024])


class NoDiffBase(kopf.DiffBaseStorage):
    """No change detection. Every handler here only watches (events and indexes); none asks
    what changed since it last ran. Yet kopf builds each event's "essence" for it, from a deep
    copy of the whole object: at hundreds of jobs a sixth of the operator's CPU time
    (hack/bench/operator_create.py under py-spy)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: Settings = memo.settings
    # kopf's own bookkeeping goes to annotations: our status schema is strict and would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.sealtune.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    # Watches that end on the server's side are re-established, so a silently dead stream
    # cannot stall the operator for longer than this.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # A burst of events about one object (a pod bound, started, ready) is handled once, for
    # its latest state: the index and the trigger see one event, not each step.
    settings.batching.batch_window = 0.1
    # Event handlers make kopf post no Events of its own; the level lets through our Normal
    # milestones (one per condition that becomes news, see reconcile.is_newsworthy).
    settings.posting.level = logging.INFO
    # Each Event poster holds a TLS connection of its own (with a 256 KiB read buffer): unbounded,
    # a burst of thousands of jobs' Events held dozens at once (memray on the scale bench). A
    # poster serves one object, whose Events come seconds apart: it need not linger for more.
    settings.posting.worker_limit = 16
    settings.posting.idle_timeout = 0.05
    settings.peering.lifetime = ours.peering_lifetime_seconds
    if ours.operator_metrics_port:
        memo.metrics_server = await metrics.serve(ours.operator_metrics_port)
    credentials = load_credentials(os.environ.get("KUBECONFIG"))
    kube = KubeClient(credentials, ours.field_manager, ours.max_api_concurrency)
    # The webhook reads through a client of its own. The operator's own writes to FineTuneJobs
    # pass through the webhook: were its reads to queue for the slots those writes hold, each
    # would wait for the API server to give up on the webhook (30 s) and admit unchecked.
    memo.admission_kube = KubeClient(credentials, ours.field_manager, ADMISSION_CONCURRENCY)
    vault = VaultAdmin(ours) if (ours.vault_operator_address or ours.vault_address) else None
    keys = OperatorKeys(ours, kube, vault)
    audit = AuditLog(
        Path(ours.audit_path) if ours.audit_path else None, stdout=sys.stdout if ours.audit_stdout else None
    )
    await audit.start()
    memo.artifacts = ArtifactKeeper(kube, keys, audit)
    memo.releases = Releaser(ours, kube, keys, audit)
    memo.vault = vault
    username = await install_admission_policies(kube, ours.job_writers)
    memo.controller = Controller(
        settings=ours,
        kube=kube,
        emit=emit,
        custody=Custody(kube, vault, keys, audit),
        publisher=Publisher(ours, kube, keys, approver=username),
        audit=audit,
    )
    await start_informers(memo)
    if ours.webhook_address:
        host = ours.webhook_host or ours.webhook_address
        files = await webhook_tls.ensure(
            kube, ours.operator_namespace, host, Path(tempfile.mkdtemp(prefix="sealtune-webhook-"))
        )
        from .webhook import server

        # Registered by name in the configuration installed with the operator (kopf's
        # managed mode, which creates one, stays off).
        settings.admission.server = server(ours, memo.admission_kube, host, files)


async def install_admission_policies(kube: KubeClient, job_writers: Sequence[str] = ()) -> str:
    """The admission policies the API server enforces for sealtune (builders/admission.py,
    builders/result_admission.py), written with the operator's own user name, which a
    SelfSubjectReview tells it, and the other writers of its Jobs (Kueue's); returns that name."""
    review = await kube.request(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=self_subject_review()
    )
    username = username_from_self_subject_review(review)
    for policy in [
        *workload_policies(username, job_writers),
        *result_admission.validating_policies(username),
    ]:
        await kube.apply(policy)
    try:
        for policy in result_admission.mutating_policies():
            await kube.apply(policy)
    except NotFound:
        log.warning(
            "The API server does not serve MutatingAdmissionPolicy (%s): FineTuneJobs must carry "
            "the annotation %s with their creator's user name, or it refuses them.",
            result_admission.MUTATING_API_VERSION,
            ANNOTATION_REQUESTED_BY,
        )
    return username


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials load_credentials reads: the pod's service account unless a
    kubeconfig is named, else the kubeconfig. Registered here because kopf picks its own
    fallback logins when it is imported, before --kubeconfig is known."""
    in_cluster = None if os.environ.get("KUBECONFIG") else kopf.login_with_service_account(**kwargs)
    return in_cluster or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await stop_informers(memo)
    await memo.controller.close()
    await memo.admission_kube.close()
    if memo.vault is not None:
        await memo.vault.logout()
    if memo.get("metrics_server") is not None:
        await memo.metrics_server.cleanup()


def peering_priority(settings: Settings) -> int:
    """kopf pauses every replica when two share the highest priority, and the replicas of one
    Deployment share their environment. Unless a priority is set, a replica started later ranks
    lower (so a restarted pod does not take over from the one at work), with random low digits
    to break ties between replicas started in the same second."""
    if "peering_priority" in settings.model_fields_set:
        return settings.peering_priority
    return (4_000_000_000 - int(time.time())) * 1000 + random.randrange(1000)  # noqa: S311


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sealtune-operator", description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: in-cluster, or $KUBECONFIG)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    settings = Settings.from_environment()
    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        # kopf logs every handler's success per event: noise at thousands of jobs.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Importing registers the handlers (the indexes' are registered with this module's import).
    if settings.webhook_address:
        from . import webhook  # noqa: F401

    memo = kopf.Memo(settings=settings)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=settings.peering_name is None,
            peering_name=settings.peering_name,
            priority=peering_priority(settings),
            liveness_endpoint=liveness,
            memo=memo,
        )
    )
