"""The validating admission webhook: the same policy as the reconcile, at `kubectl apply` time.

failurePolicy is Ignore: while the operator is unavailable, FineTuneJobs are still accepted
(GitOps syncs keep working) and the reconcile, which checks the same policy before it creates
anything, reports PolicyAdmitted=False. The webhook is for early, clear refusals; the
reconcile is the enforcement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from .. import metrics
from ..adapters.kube import KubeClient
from ..api.v1alpha1 import GROUP, VERSION, DataDomain, FineTuneJob
from ..policy import domain_not_found, evaluate
from ..settings import Settings


@kopf.on.validate(
    GROUP, VERSION, "finetunejobs", id="policy", operations=["CREATE", "UPDATE"], ignore_failures=True
)
async def check_policy(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    with metrics.webhook_timer():
        await _check_policy(body, namespace, memo)


async def _check_policy(body: kopf.Body, namespace: str | None, memo: kopf.Memo) -> None:
    try:
        metadata = {**body.metadata, "namespace": namespace}
        job = FineTuneJob.model_validate(
            {**{k: v for k, v in body.items() if k != "status"}, "metadata": metadata}
        )
    except ValidationError:
        return  # the API server's schema and CEL rules refuse it with their own messages
    # Read the domain and namespace live, not from the indexes: a GitOps sync applies a domain
    # and its jobs together, and a standby replica (kopf peering) keeps no indexes current.
    kube: KubeClient = memo.admission_kube
    domain_body = await kube.get("DataDomain", job.spec.domain_ref.name)
    if domain_body is None:
        violation = domain_not_found(job)
        metrics.count_refusal(violation.reason, "admission")
        raise kopf.AdmissionError(str(violation), code=403)
    domain = DataDomain.model_validate({k: v for k, v in domain_body.items() if k != "status"})
    namespace_body = await kube.get("Namespace", namespace or "") or {}
    labels: dict[str, str] = namespace_body.get("metadata", {}).get("labels", {})
    violations = evaluate(job, domain, labels)
    if violations:
        metrics.count_refusal(violations[0].reason, "admission")
        raise kopf.AdmissionError(
            f"FineTuneJob violates DataDomain {domain.metadata['name']}'s policy: "
            + "; ".join(str(v) for v in violations),
            code=403,
        )


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, registered by Service reference instead of URL: in a cluster the API
    server then reaches the replicas through the Service's endpoints, and needs neither cluster
    DNS nor a route to a pod IP of its own."""

    def __init__(self, *, service: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = dict(service)

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in super().__call__(fn):
            # kopf appends each handler's id to the service path, as it does to the URL.
            yield {"caBundle": config.get("caBundle"), "service": {**self.service, "path": ""}}


def server(settings: Settings, host: str, files: Mapping[str, Path]) -> kopf.WebhookServer:
    """The webhook server for these settings: by Service reference when webhook_service names
    one, else by URL (https://host:port)."""
    options: dict[str, Any] = {
        "addr": settings.webhook_address,
        "port": settings.webhook_port,
        "host": host,
        "certfile": str(files["tls.crt"]),
        "pkeyfile": str(files["tls.key"]),
        "cafile": str(files["ca.crt"]),
    }
    if settings.webhook_service is None:
        return kopf.WebhookServer(**options)
    service = {
        "namespace": settings.operator_namespace,
        "name": settings.webhook_service,
        "port": settings.webhook_service_port,
    }
    return ServiceWebhookServer(service=service, **options)
