"""The validating admission webhook: the same policy as the reconcile, at `kubectl apply` time.

failurePolicy is Ignore: while the operator is unavailable, FineTuneJobs are still accepted
(GitOps syncs keep working) and the reconcile, which checks the same policy before it creates
anything, reports PolicyAdmitted=False. The webhook is for early, clear refusals; the
reconcile is the enforcement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from .. import metrics
from ..adapters.kube import ApiError, KubeClient, resource_path
from ..api.v1alpha1 import GROUP, VERSION, DataDomain, FineTuneJob
from ..policy import domain_not_found, evaluate
from ..settings import Settings

logger = logging.getLogger(__name__)


POLICY = "policy"
WEBHOOKS = {POLICY: "policy.validate.sealtune.dev"}
"""Each admission handler's id (kopf serves it at /<id>) and its webhook's name in the
configuration the chart installs (templates/webhook.yaml)."""


@kopf.on.validate(
    GROUP, VERSION, "finetunejobs", id=POLICY, operations=["CREATE", "UPDATE"], ignore_failures=True
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


RETRY_SECONDS = 10


class RegisteredServer:
    """kopf's webhook server, registered in the configuration installed with the operator: each
    client config the server yields (its address and CA) is written into that configuration's
    webhooks by name. kopf's own manager would create the configuration and rewrite its rules,
    which takes cluster-wide create on webhook configurations; this takes patch on one name."""

    def __init__(
        self,
        server: kopf.WebhookServer,
        kube: KubeClient,
        configuration: str,
        service: Mapping[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.kube = kube
        self.configuration = configuration
        self.service = service
        """By Service reference when set: in a cluster the API server then reaches the replicas
        through the Service's endpoints, and needs neither cluster DNS nor a route to a pod."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in self.server(fn):
            await self.register(config)
            yield config

    def patch(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A strategic merge patch that points each webhook at this server (null drops the
        other kind of address)."""
        webhooks = []
        for handler, name in WEBHOOKS.items():
            address: dict[str, Any]
            if self.service is None:
                address = {"url": f"{str(config['url']).rstrip('/')}/{handler}", "service": None}
            else:
                address = {"service": {**self.service, "path": f"/{handler}"}, "url": None}
            webhooks.append({"name": name, "clientConfig": {"caBundle": config.get("caBundle"), **address}})
        return {"webhooks": webhooks}

    async def register(self, config: Mapping[str, Any]) -> None:
        """Retries until the configuration takes the patch: the webhook is served meanwhile,
        and the reconcile enforces the same policy without it."""
        path = resource_path("ValidatingWebhookConfiguration", name=self.configuration)
        while True:
            try:
                await self.kube.request(
                    "PATCH",
                    path,
                    body=self.patch(config),
                    content_type="application/strategic-merge-patch+json",
                )
            except ApiError as error:
                logger.error(
                    "Cannot register the admission webhook in ValidatingWebhookConfiguration %s "
                    "(%s). Install it with the operator (the chart's templates/webhook.yaml, with "
                    "the webhooks %s), or set SEALTUNE_WEBHOOK_CONFIGURATION to its name. "
                    "Retrying in %d s.",
                    self.configuration,
                    error,
                    ", ".join(WEBHOOKS.values()),
                    RETRY_SECONDS,
                )
                await asyncio.sleep(RETRY_SECONDS)
                continue
            logger.info(
                "Registered the admission webhook in ValidatingWebhookConfiguration %s.",
                self.configuration,
            )
            return


def server(settings: Settings, kube: KubeClient, host: str, files: Mapping[str, Path]) -> RegisteredServer:
    """The webhook server for these settings, registered by Service reference when
    webhook_service names one, else by URL (https://host:port)."""
    served = kopf.WebhookServer(
        addr=settings.webhook_address,
        port=settings.webhook_port,
        host=host,
        certfile=str(files["tls.crt"]),
        pkeyfile=str(files["tls.key"]),
        cafile=str(files["ca.crt"]),
    )
    service = None
    if settings.webhook_service is not None:
        service = {
            "namespace": settings.operator_namespace,
            "name": settings.webhook_service,
            "port": settings.webhook_service_port,
        }
    return RegisteredServer(served, kube, settings.webhook_configuration, service)
