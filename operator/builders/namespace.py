"""A domain's workload namespace: where its jobs' pods, identities and claims live, and where
tenants hold no rights. Pod Security "restricted" is enforced there, and every pod is cut off
until a job's own NetworkPolicy opens what it needs."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import DataDomain
from ..names import LABEL_WORKLOAD_OF, MANAGED_BY
from .meta import domain_namespace

DEFAULT_DENY = "sealtune-default-deny"


def namespace_object(domain: DataDomain) -> dict[str, Any]:
    pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": domain_namespace(domain),
            "labels": {
                **MANAGED_BY,
                **pss,
                "pod-security.kubernetes.io/enforce-version": "latest",
                LABEL_WORKLOAD_OF: domain.metadata["name"],
            },
        },
    }


def default_deny(domain: DataDomain) -> dict[str, Any]:
    """Every pod of the namespace cut off both ways; each job's own policy opens its paths."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DEFAULT_DENY, "namespace": domain_namespace(domain), "labels": dict(MANAGED_BY)},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
