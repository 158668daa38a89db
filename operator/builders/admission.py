"""Defence in depth in each DataDomain's workload namespace: ValidatingAdmissionPolicies that the
API server itself enforces, so they hold while the operator is down, and the namespace and its
baseline NetworkPolicy.

Tenants hold no RBAC in a workload namespace. These policies are for the day a careless
RoleBinding gives someone ``edit`` there anyway (which lets them create pods and Jobs with any
ServiceAccount of the namespace, exec into pods and mint tokens):

- ``sealtune-workload-pods`` (new pods): only the Job controller creates them, each controlled
  by a Job, placed as the domain allows (node pools, regions, confidential RuntimeClass), without
  host namespaces or hostPath.
- ``sealtune-workload-jobs`` (new Jobs): only the operator (and the extra writers it names, e.g.
  Kueue) creates them. Jobs are what the Job controller turns into pods, so this is what keeps
  every pod the operator's design.
- ``sealtune-workload-access`` (existing workloads): no exec, attach, port-forward or ephemeral
  containers; ServiceAccount tokens only for kubelets (the pods' projected volumes); no pod spec
  changes (no image swaps); Job spec changes and new or changed NetworkPolicies only by the
  operator's writers. It takes no
  DataDomain, so it holds after the domain is gone and never blocks cleanup.

Pod Security "restricted" (enforced by the namespace's labels) covers the rest of the pod:
privilege, capabilities, seccomp, volume types. The bindings of the pods and jobs policies pass
the domain as parameter; a missing domain denies (parameterNotFoundAction: Deny).

DELETE is not restricted: deleting reveals nothing and runs no code, and the legitimate
deleters (namespace controller, garbage collector, Job controller, kubelets, Kueue) are too
many to list without making the policy brittle.

Pure functions, no I/O: the operator learns its own user name by a SelfSubjectReview (see
``self_subject_review`` and ``username_from_self_subject_review``) and applies what these return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..api.v1alpha1 import API_VERSION
from ..names import (
    JOB_CONTROLLER_USERNAME,
    LABEL_WORKLOAD_OF,
    MANAGED_BY,
    workload_label_value,
)
from .network import NAMESPACE_NAME_LABEL
from .workload import REGION_LABEL

POD_POLICY = "sealtune-workload-pods"
JOB_POLICY = "sealtune-workload-jobs"
ACCESS_POLICY = "sealtune-workload-access"
POLICIES = (POD_POLICY, JOB_POLICY, ACCESS_POLICY)
DOMAIN_POLICIES = (POD_POLICY, JOB_POLICY)
"""The policies that take the DataDomain as parameter."""
BASELINE_NETWORK_POLICY = "sealtune-default-deny"
PARAM_KIND = {"apiVersion": API_VERSION, "kind": "DataDomain"}
NODES_GROUP = "system:nodes"
MASTERS_GROUP = "system:masters"
POD_SECURITY_LABELS = {
    f"pod-security.kubernetes.io/{mode}{suffix}": value
    for mode in ("enforce", "audit", "warn")
    for suffix, value in (("", "restricted"), ("-version", "latest"))
}
MAX_NAME = 253

Manifest = dict[str, Any]


def cel_string(value: str) -> str:
    """A CEL string literal holding ``value`` (JSON's escapes are CEL's)."""
    return json.dumps(value, ensure_ascii=True)


def _validation(rule: str, policy: str, expression: str, message: str, dynamic: bool = False) -> Manifest:
    """One validation. Messages start with ``<policy>/<rule>:`` so a refusal names its rule."""
    text = f"{policy}/{rule}: "
    said = (
        {"messageExpression": f"{cel_string(text)} + {message}"} if dynamic else {"message": text + message}
    )
    return {"expression": expression, **said, "reason": "Forbidden"}


def _rule(group: str, operations: list[str], resources: list[str]) -> Manifest:
    return {
        "apiGroups": [group],
        "apiVersions": ["v1"],
        "operations": operations,
        "resources": resources,
        "scope": "Namespaced",
    }


def _policy(
    name: str,
    rules: list[Manifest],
    validations: list[Manifest],
    variables: list[Manifest] | None = None,
    *,
    with_domain: bool,
) -> Manifest:
    spec: Manifest = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "matchPolicy": "Equivalent",
            # Only namespaces the operator made for a domain; each binding narrows to one.
            "namespaceSelector": {"matchExpressions": [{"key": LABEL_WORKLOAD_OF, "operator": "Exists"}]},
            "resourceRules": rules,
        },
        "validations": validations,
    }
    if with_domain:
        spec["paramKind"] = dict(PARAM_KIND)
    if variables:
        spec["variables"] = variables
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }


def _same_values(a: str, b: str) -> str:
    """Two node-selector requirements' values are equal as sets (``values`` may be absent)."""
    va, vb = f"{a}.?values.orValue([])", f"{b}.?values.orValue([])"
    return f"{va}.all(v, v in {vb}) && {vb}.all(v, v in {va})"


# Each required node-selector term of the pod must hold every requirement of one of the
# domain's pools (builders/workload.py writes one term per pool, plus the region requirement):
# then any node that matches a term is in that pool.
IN_POOLS = (
    "size(variables.pools) == 0 || (size(variables.terms) > 0 && variables.terms.all(t, "
    "variables.pools.exists(p, p.matchExpressions.all(pe, t.?matchExpressions.orValue([]).exists(te, "
    f"te.key == pe.key && te.operator == pe.operator && {_same_values('te', 'pe')})))))"
)
# ... and every term must keep the node in the domain's regions.
IN_REGIONS = (
    "size(variables.regions) == 0 || (size(variables.terms) > 0 && variables.terms.all(t, "
    "t.?matchExpressions.orValue([]).exists(e, "
    f"e.key == {cel_string(REGION_LABEL)} && e.operator == 'In' && size(e.?values.orValue([])) > 0 && "
    "e.?values.orValue([]).all(v, v in variables.regions))))"
)
CONFIDENTIAL = (
    "!params.spec.?placement.?requireConfidentialCompute.orValue(false) || "
    "(object.spec.?runtimeClassName.orValue('') != '' && object.spec.?runtimeClassName.orValue('') == "
    "params.spec.?placement.?confidentialRuntimeClassName.orValue(''))"
)
CONTROLLED_BY_JOB = (
    "object.metadata.?ownerReferences.orValue([]).exists(r, "
    "r.apiVersion == 'batch/v1' && r.kind == 'Job' && r.?controller.orValue(false))"
)
NO_HOST_ACCESS = (
    "!object.spec.?hostNetwork.orValue(false) && !object.spec.?hostPID.orValue(false) && "
    "!object.spec.?hostIPC.orValue(false) && object.spec.?volumes.orValue([]).all(v, !has(v.hostPath))"
)


def pod_policy() -> Manifest:
    """New pods: made by the Job controller for a Job, placed as the domain allows."""
    p = POD_POLICY
    return _policy(
        p,
        [_rule("", ["CREATE"], ["pods"])],
        [
            _validation(
                "creator",
                p,
                f"request.userInfo.username == {cel_string(JOB_CONTROLLER_USERNAME)}",
                "request.userInfo.username + ' may not create pods in workload namespace ' + "
                "request.namespace + '; only the Job controller does, for the Jobs of the sealtune "
                "operator. Create a FineTuneJob in your team namespace instead.'",
                dynamic=True,
            ),
            _validation(
                "owner",
                p,
                CONTROLLED_BY_JOB,
                "a pod in a workload namespace must be controlled by a batch/v1 Job (an "
                "ownerReference with controller: true); sealtune's Jobs make their own pods.",
            ),
            _validation(
                "confidential-runtime",
                p,
                CONFIDENTIAL,
                "'DataDomain ' + params.metadata.name + ' requires confidential compute: the pod "
                "must set runtimeClassName ' + params.spec.?placement.?confidentialRuntimeClassName"
                ".orValue('<unset>') + '. Only the operator builds these pods.'",
                dynamic=True,
            ),
            _validation(
                "node-pools",
                p,
                IN_POOLS,
                "'DataDomain ' + params.metadata.name + ' allows only its node pools: every "
                "required node-affinity term of the pod must hold all requirements of one of "
                "spec.placement.nodePools. Only the operator builds these pods.'",
                dynamic=True,
            ),
            _validation(
                "regions",
                p,
                IN_REGIONS,
                "'DataDomain ' + params.metadata.name + ' allows only regions ' + "
                "variables.regions.join(', ') + ': every required node-affinity term of the pod "
                f"must require {REGION_LABEL} In a subset of them. Only the operator builds these "
                "pods.'",
                dynamic=True,
            ),
            _validation(
                "host-access",
                p,
                NO_HOST_ACCESS,
                "pods in a workload namespace may not use the host's network, PID or IPC "
                "namespace or hostPath volumes.",
            ),
        ],
        [
            {"name": "pools", "expression": "params.spec.?placement.?nodePools.orValue([])"},
            {"name": "regions", "expression": "params.spec.?placement.?regions.orValue([])"},
            {
                "name": "terms",
                "expression": "object.spec.?affinity.?nodeAffinity"
                ".?requiredDuringSchedulingIgnoredDuringExecution.?nodeSelectorTerms.orValue([])",
            },
        ],
        with_domain=True,
    )


def _writers(writers: Iterable[str]) -> str:
    return f"request.userInfo.username in [{', '.join(cel_string(w) for w in writers)}]"


def job_policy(writers: Iterable[str]) -> Manifest:
    """New Jobs: only the operator's (or another writer's, such as Kueue's)."""
    p = JOB_POLICY
    return _policy(
        p,
        [_rule("batch", ["CREATE"], ["jobs"])],
        [
            _validation(
                "creator",
                p,
                _writers(writers),
                "request.userInfo.username + ' may not create Jobs in workload namespace ' + "
                "request.namespace + '; only the sealtune operator does. Create a FineTuneJob in "
                "your team namespace instead.'",
                dynamic=True,
            ),
        ],
        with_domain=True,
    )


def access_policy(writers: Iterable[str]) -> Manifest:
    """What is done to existing workloads. Needs no DataDomain, so it holds after the domain is
    gone and never blocks cleanup (the Job controller and the garbage collector remove
    finalizers by updates, which a missing parameter would deny)."""
    p = ACCESS_POLICY
    return _policy(
        p,
        [
            _rule("", ["CONNECT"], ["pods/exec", "pods/attach", "pods/portforward"]),
            _rule("", ["UPDATE"], ["pods", "pods/ephemeralcontainers"]),
            _rule("", ["CREATE"], ["serviceaccounts/token"]),
            _rule("batch", ["UPDATE"], ["jobs"]),
            _rule("networking.k8s.io", ["CREATE", "UPDATE"], ["networkpolicies"]),
        ],
        [
            _validation(
                "no-interactive-access",
                p,
                "!(variables.subresource in ['exec', 'attach', 'portforward', 'ephemeralcontainers'])",
                "request.userInfo.username + ' may not use pods/' + variables.subresource + ' in "
                "workload namespace ' + request.namespace + ': trainers hold decrypted data and "
                "secrets in memory. Read the FineTuneJob status and the trainer logs instead.'",
                dynamic=True,
            ),
            _validation(
                "token-for-kubelets",
                p,
                # Cluster admins (system:masters) are trusted, and could unbind the policy anyway.
                "variables.subresource != 'token' || request.userInfo.?groups.orValue([]).exists(g, "
                f"g in [{cel_string(NODES_GROUP)}, {cel_string(MASTERS_GROUP)}])",
                "request.userInfo.username + ' may not request tokens of ServiceAccounts in "
                "workload namespace ' + request.namespace + '; only kubelets do, for the projected "
                "volumes of its pods (and cluster admins).'",
                dynamic=True,
            ),
            _validation(
                "immutable-pods",
                p,
                "request.resource.resource != 'pods' || variables.subresource != '' || "
                "object.spec == oldObject.spec",
                "the spec of a pod in a workload namespace cannot change (no image swaps, no added "
                "tolerations); change the FineTuneJob instead.",
            ),
            _validation(
                "job-writer",
                p,
                # Metadata-only updates (the garbage collector's finalizers, labels) stay RBAC's.
                "request.resource.resource != 'jobs' || variables.subresource != '' || "
                f"{_writers(writers)} || "
                "object.spec == oldObject.spec",
                "request.userInfo.username + ' may not change the spec of Jobs in workload "
                "namespace ' + request.namespace + '; only the sealtune operator does. Change the "
                "FineTuneJob in your team namespace instead.'",
                dynamic=True,
            ),
            _validation(
                "network-writer",
                p,
                # NetworkPolicies add up: one more anywhere in the namespace could open a path.
                # Deleting one only narrows (the namespace's default-deny stays), so it is left
                # to RBAC and the namespace controller.
                f"request.resource.resource != 'networkpolicies' || {_writers(writers)}",
                "request.userInfo.username + ' may not write NetworkPolicies in workload "
                "namespace ' + request.namespace + '; only the sealtune operator does. Ask the "
                "domain admin to change the DataDomain spec.network instead.'",
                dynamic=True,
            ),
        ],
        # Absent from the request (JSON omitempty) for a main resource.
        [{"name": "subresource", "expression": "request.?subResource.orValue('')"}],
        with_domain=False,
    )


def workload_policies(operator_username: str, job_writers: Iterable[str] = ()) -> list[Manifest]:
    """The cluster-scoped policies, the same for every domain. ``operator_username`` (from a
    SelfSubjectReview at start) is the one identity that may create Jobs; ``job_writers`` adds
    others that must change their spec, such as Kueue's ServiceAccount when queues are used
    (it unsuspends Jobs and merges its flavors' node labels)."""
    if not operator_username:
        raise ValueError("the operator's user name is empty")
    writers = [operator_username, *(w for w in job_writers if w and w != operator_username)]
    return [pod_policy(), job_policy(writers), access_policy(writers)]


def _cut(name: str) -> str:
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - 11].rstrip('.-')}-{digest}"


def binding_name(policy: str, domain_name: str) -> str:
    """``<policy>-<domain>``, cut to 253 characters with a hash of the whole when longer."""
    return _cut(f"{policy}-{domain_name}")


def workload_binding(domain_name: str, workload_namespace: str, policy: str = POD_POLICY) -> Manifest:
    """Binds ``policy`` to the domain's workload namespace alone (by its immutable name label
    and the domain label), with the DataDomain as parameter."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    # A missing domain denies what needs it (new pods and Jobs); the access policy needs none.
    param = (
        {"paramRef": {"name": domain_name, "parameterNotFoundAction": "Deny"}}
        if policy in DOMAIN_POLICIES
        else {}
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {
            "name": binding_name(policy, domain_name),
            "labels": {**MANAGED_BY, LABEL_WORKLOAD_OF: workload_label_value(domain_name)},
        },
        "spec": {
            "policyName": policy,
            "validationActions": ["Deny"],
            **param,
            "matchResources": {
                "namespaceSelector": {
                    "matchLabels": {
                        NAMESPACE_NAME_LABEL: workload_namespace,
                        LABEL_WORKLOAD_OF: workload_label_value(domain_name),
                    }
                }
            },
        },
    }


def workload_bindings(domain_name: str, workload_namespace: str) -> list[Manifest]:
    """One binding per policy."""
    return [workload_binding(domain_name, workload_namespace, policy) for policy in POLICIES]


def workload_namespace(domain_name: str, workload_namespace: str) -> Manifest:
    """The namespace that holds a domain's jobs: Pod Security "restricted" enforced (audit and
    warn too, at the latest version), marked as the domain's."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": workload_namespace,
            "labels": {
                **POD_SECURITY_LABELS,
                **MANAGED_BY,
                LABEL_WORKLOAD_OF: workload_label_value(domain_name),
            },
        },
    }


def baseline_network_policy(workload_namespace: str) -> Manifest:
    """Deny everything both ways for every pod of the namespace; each job's own policy opens
    what it needs (NetworkPolicies are additive)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": BASELINE_NETWORK_POLICY,
            "namespace": workload_namespace,
            "labels": dict(MANAGED_BY),
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def self_subject_review() -> Manifest:
    """The body to POST to /apis/authentication.k8s.io/v1/selfsubjectreviews."""
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}


def username_from_self_subject_review(body: Mapping[str, Any]) -> str:
    """The user name the API server authenticated the caller as, from a SelfSubjectReview's
    response (``status.userInfo.username``)."""
    status = body.get("status") if isinstance(body, Mapping) else None
    user = status.get("userInfo") if isinstance(status, Mapping) else None
    name = user.get("username") if isinstance(user, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ValueError("the SelfSubjectReview has no status.userInfo.username")
    return name


__all__ = [
    "ACCESS_POLICY",
    "BASELINE_NETWORK_POLICY",
    "DOMAIN_POLICIES",
    "JOB_POLICY",
    "LABEL_WORKLOAD_OF",
    "PARAM_KIND",
    "POD_POLICY",
    "POLICIES",
    "access_policy",
    "baseline_network_policy",
    "binding_name",
    "cel_string",
    "job_policy",
    "pod_policy",
    "self_subject_review",
    "username_from_self_subject_review",
    "workload_binding",
    "workload_bindings",
    "workload_namespace",
    "workload_policies",
]
