"""The validating admission webhook: the same policy as the reconcile, at `kubectl apply` time.

failurePolicy is Ignore: while the operator is unavailable, FineTuneJobs are still accepted
(GitOps syncs keep working) and the reconcile, which checks the same policy before it creates
anything, reports PolicyAdmitted=False. The webhook is for early, clear refusals; the
reconcile is the enforcement.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from ..adapters.kube import KubeClient
from ..api.v1alpha1 import GROUP, VERSION, DataDomain, FineTuneJob
from ..policy import domain_not_found, evaluate


@kopf.on.validate(
    GROUP, VERSION, "finetunejobs", id="policy", operations=["CREATE", "UPDATE"], ignore_failures=True
)
async def check_policy(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    try:
        metadata = {**body.metadata, "namespace": namespace}
        job = FineTuneJob.model_validate(
            {**{k: v for k, v in body.items() if k != "status"}, "metadata": metadata}
        )
    except ValidationError:
        return  # the API server's schema and CEL rules refuse it with their own messages
    # Read the domain and namespace live, not from the indexes: a GitOps sync applies a domain
    # and its jobs together, and a standby replica (kopf peering) keeps no indexes current.
    kube: KubeClient = memo.controller.kube
    domain_body = await kube.get("DataDomain", job.spec.domain_ref.name)
    if domain_body is None:
        raise kopf.AdmissionError(str(domain_not_found(job)), code=403)
    domain = DataDomain.model_validate({k: v for k, v in domain_body.items() if k != "status"})
    namespace_body = await kube.get("Namespace", namespace or "") or {}
    labels: dict[str, str] = namespace_body.get("metadata", {}).get("labels", {})
    violations = evaluate(job, domain, labels)
    if violations:
        raise kopf.AdmissionError(
            f"FineTuneJob violates DataDomain {domain.metadata['name']}'s policy: "
            + "; ".join(str(v) for v in violations),
            code=403,
        )
