"""Each DataDomain's workload namespace, where its jobs run and tenants hold no rights: the
operator makes it (Pod Security restricted, a default-deny NetworkPolicy, the bindings of the
admission policies that guard it) when the domain appears, or when a job first needs it. A
namespace that sealtune did not make for the domain is never used, nor taken over."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .adapters.kube import Conflict, KubeClient
from .api.v1alpha1 import DataDomain
from .api.v1alpha1.conditions import DomainConditionType, DomainReadyReason
from .builders.admission import baseline_network_policy, workload_bindings, workload_namespace
from .builders.meta import domain_namespace
from .names import LABEL_WORKLOAD_OF, workload_label_value
from .status import Cond, merge_conditions

ENFORCE = "pod-security.kubernetes.io/enforce"


def is_domains(labels: Mapping[str, str], domain: DataDomain) -> bool:
    """Whether a namespace's labels say it is this domain's workload namespace, as sealtune makes
    it: labelled as the domain's, with Pod Security "restricted" enforced. (A cluster admin may
    make it so first, to provision the domain's claims; the operator never changes a namespace.)"""
    return (
        labels.get(LABEL_WORKLOAD_OF) == workload_label_value(domain.metadata["name"])
        and labels.get(ENFORCE) == "restricted"
    )


async def ensure(kube: KubeClient, domain: DataDomain) -> bool:
    """Makes the domain's workload namespace and what guards it; False when the namespace
    exists and is not the domain's (nothing is then made or changed)."""
    name, domain_name = domain_namespace(domain), domain.metadata["name"]
    namespace = workload_namespace(domain_name, name)
    try:
        await kube.create(namespace)
    except Conflict as error:
        if error.reason != "AlreadyExists":
            raise
        found = await kube.get("Namespace", name)
        if not is_domains(((found or {}).get("metadata") or {}).get("labels") or {}, domain):
            return False
    for obj in (baseline_network_policy(name), *workload_bindings(domain_name, name)):
        await kube.create_or_apply(obj)
    return True


def domain_status(
    domain: DataDomain, old: Mapping[str, Any], ours: bool, jobs_using: int, now: datetime
) -> dict[str, Any]:
    """The domain's status after ``ensure``: its workload namespace, Ready saying whether jobs
    can run there, and how many FineTuneJobs name it."""
    namespace = domain_namespace(domain)
    cond = (
        Cond(
            DomainConditionType.READY,
            True,
            DomainReadyReason.DOMAIN_READY,
            f"jobs run in the workload namespace {namespace}, which tenants hold no rights in",
        )
        if ours
        else Cond(
            DomainConditionType.READY,
            False,
            DomainReadyReason.WORKLOAD_NAMESPACE_CONFLICT,
            f"namespace {namespace} exists but is not this domain's (labelled sealtune.dev/workload-of "
            "with the domain's name, Pod Security restricted enforced); name an unused one in "
            "spec.workloadNamespace, or delete or label that one",
        )
    )
    generation = int(domain.metadata.get("generation", 1))
    return {
        **old,
        "phase": "Ready" if ours else "NotReady",
        "observedGeneration": generation,
        "workloadNamespace": namespace,
        "jobsUsing": jobs_using,
        "conditions": merge_conditions(old.get("conditions") or [], [cond], generation, now),
    }
