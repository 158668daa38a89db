"""The job's NetworkPolicy: deny everything both ways, then open only what training needs."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import DataDomain, FineTuneJob
from ..settings import Settings
from .endpoints import endpoint
from .meta import child_metadata, selector_labels, workload_of

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _ports(*ports: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": protocol} for port, protocol in ports]


def _url_rule(url: str) -> dict[str, Any] | None:
    peer = endpoint(url)
    if peer is None:
        return None
    to = {"ipBlock": {"cidr": peer.cidr}} if peer.cidr else _namespace(peer.namespace or "")
    return {"to": [to], "ports": _ports((peer.port, "TCP"))}


def network_policy(job: FineTuneJob, domain: DataDomain, settings: Settings) -> dict[str, Any]:
    workload = workload_of(job, domain)
    own_pods = {"podSelector": {"matchLabels": selector_labels(job)}}
    metrics = _ports((settings.metrics_port, "TCP"))
    ingress = [
        # Collective backends (gloo, NCCL) open ephemeral ports between ranks besides the
        # rendezvous port, so peers of the same job may reach each other on any port; no
        # other pod may.
        {"from": [own_pods]},
        {"from": [_namespace(settings.monitoring_namespace)], "ports": metrics},
        {"from": [_namespace(settings.operator_namespace)], "ports": metrics},
    ]
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    **_namespace(settings.dns_namespace),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": _ports((53, "UDP"), (53, "TCP")),
        },
        {"to": [own_pods]},
    ]
    urls = [domain.spec.network.vault_address or settings.vault_address]
    if domain.spec.source.s3 is not None and domain.spec.source.s3.endpoint:
        urls.append(domain.spec.source.s3.endpoint)
    egress += [rule for url in urls if url for rule in [_url_rule(url)] if rule]
    egress += [
        {
            "to": [{"ipBlock": {"cidr": allowed.cidr}}],
            **(
                {"ports": [{"port": p.port, "protocol": p.protocol} for p in allowed.ports]}
                if allowed.ports
                else {}
            ),
        }
        for allowed in domain.spec.network.egress
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(job, workload, workload.network_policy, "isolation"),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(job)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
