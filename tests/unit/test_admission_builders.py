"""The workload namespace's defence in depth, as pure data: ValidatingAdmissionPolicies, their
bindings, the namespace and its default-deny NetworkPolicy. (That the API server compiles and
enforces them: tests/integration/test_workload_admission.py.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sealtune import names
from sealtune.api.v1alpha1 import DataDomain, FineTuneJob
from sealtune.builders import admission, result_admission
from sealtune.builders.workload import REGION_LABEL, indexed_job
from sealtune.settings import Settings
from tests.support.objects import confidential_placement, data_domain, finetune_job

OPERATOR = "system:serviceaccount:sealtune-system:sealtune"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def policies(*writers: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in admission.workload_policies(OPERATOR, writers)}


def test_policies_are_named_fail_closed_and_scoped_to_workload_namespaces() -> None:
    found = policies()
    assert list(found) == ["sealtune-workload-pods", "sealtune-workload-jobs", "sealtune-workload-access"]
    for policy in found.values():
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["kind"] == "ValidatingAdmissionPolicy"
        assert "namespace" not in policy["metadata"], "policies are cluster-scoped"
        spec = policy["spec"]
        assert spec["failurePolicy"] == "Fail"
        assert spec["matchConstraints"]["namespaceSelector"] == {
            "matchExpressions": [{"key": "sealtune.dev/workload-of", "operator": "Exists"}]
        }
    assert admission.workload_policies(OPERATOR) == admission.workload_policies(OPERATOR), "deterministic"


def rules(policy: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, operation)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }


def test_what_each_policy_matches() -> None:
    found = policies()
    assert rules(found["sealtune-workload-pods"]) == {("", "pods", "CREATE")}
    assert rules(found["sealtune-workload-jobs"]) == {("batch", "jobs", "CREATE")}
    assert rules(found["sealtune-workload-access"]) == {
        ("", "pods/exec", "CONNECT"),
        ("", "pods/attach", "CONNECT"),
        ("", "pods/portforward", "CONNECT"),
        ("", "pods", "UPDATE"),
        ("", "pods/ephemeralcontainers", "UPDATE"),
        ("", "serviceaccounts/token", "CREATE"),
        ("batch", "jobs", "UPDATE"),
        ("networking.k8s.io", "networkpolicies", "CREATE"),
        ("networking.k8s.io", "networkpolicies", "UPDATE"),
    }
    # New pods and Jobs need the domain; what is done to existing ones must not (a missing
    # parameter denies, and the cleanup of a deleted domain's pods updates them).
    assert found["sealtune-workload-pods"]["spec"]["paramKind"] == {
        "apiVersion": "sealtune.dev/v1alpha1",
        "kind": "DataDomain",
    }
    assert found["sealtune-workload-jobs"]["spec"]["paramKind"] == admission.PARAM_KIND
    assert "paramKind" not in found["sealtune-workload-access"]["spec"]
    for policy in found.values():
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
            assert "DELETE" not in rule["operations"] and "*" not in rule["operations"]


def test_every_validation_names_its_rule_and_says_forbidden() -> None:
    seen = set()
    for name, policy in policies().items():
        for validation in policy["spec"]["validations"]:
            assert validation["reason"] == "Forbidden"
            message = validation.get("message") or validation["messageExpression"]
            prefix = re.match(r'^"?([a-z-]+)/([a-z-]+): ', message)
            assert prefix and prefix[1] == name, message
            seen.add(prefix[2])
            assert ("message" in validation) != ("messageExpression" in validation)
    assert seen >= {
        "creator",
        "owner",
        "confidential-runtime",
        "node-pools",
        "regions",
        "host-access",
        "no-interactive-access",
        "token-for-kubelets",
        "immutable-pods",
        "job-writer",
    }


def expressions(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    return [
        *(v["expression"] for v in spec.get("variables", [])),
        *(v["expression"] for v in spec["validations"]),
        *(v["messageExpression"] for v in spec["validations"] if "messageExpression" in v),
    ]


def test_cel_is_balanced_and_uses_no_field_the_request_may_omit() -> None:
    results = [
        p for p in result_admission.validating_policies(OPERATOR) if p["kind"] == "ValidatingAdmissionPolicy"
    ]
    for policy in [*policies().values(), *results]:
        for expression in expressions(policy):
            unquoted = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", expression)
            assert unquoted.count("(") == unquoted.count(")"), expression
            assert unquoted.count("[") == unquoted.count("]"), expression
            assert "'" not in unquoted.replace("''", ""), expression
            # subResource is omitted from a main resource's request; read it optionally.
            assert "request.subResource" not in expression or "?subResource" in expression


def test_the_job_controller_makes_pods_and_the_operator_jobs() -> None:
    found = policies("system:serviceaccount:kueue-system:kueue-controller-manager")
    pods = json.dumps(found["sealtune-workload-pods"])
    assert (
        json.dumps(f"request.userInfo.username == {json.dumps(names.JOB_CONTROLLER_USERNAME)}")[1:-1] in pods
    )
    assert names.JOB_CONTROLLER_USERNAME == "system:serviceaccount:kube-system:job-controller"
    creator = found["sealtune-workload-jobs"]["spec"]["validations"][0]["expression"]
    assert creator == (
        'request.userInfo.username in ["system:serviceaccount:sealtune-system:sealtune", '
        '"system:serviceaccount:kueue-system:kueue-controller-manager"]'
    )
    writer = next(
        v["expression"]
        for v in found["sealtune-workload-access"]["spec"]["validations"]
        if "job-writer" in v.get("messageExpression", "")
    )
    assert "kueue-controller-manager" in writer and "object.spec == oldObject.spec" in writer


def test_a_user_name_cannot_break_out_of_its_cel_string() -> None:
    hostile = 'x" || true || "\''
    (creator,) = admission.job_policy([hostile])["spec"]["validations"]
    assert creator["expression"] == f"request.userInfo.username in [{json.dumps(hostile)}]"
    assert json.loads(creator["expression"].split(" in [")[1][:-1]) == hostile


def test_operator_user_name_is_required() -> None:
    with pytest.raises(ValueError, match="empty"):
        admission.workload_policies("")


def test_bindings_pass_the_domain_and_select_one_namespace() -> None:
    bindings = admission.workload_bindings("payments", "sealtune-w-payments")
    assert [b["metadata"]["name"] for b in bindings] == [
        "sealtune-workload-pods-payments",
        "sealtune-workload-jobs-payments",
        "sealtune-workload-access-payments",
    ]
    for binding, policy in zip(bindings, admission.POLICIES, strict=True):
        assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
        spec = binding["spec"]
        assert spec["policyName"] == policy
        assert spec["validationActions"] == ["Deny"]
        assert spec["matchResources"]["namespaceSelector"] == {
            "matchLabels": {
                "kubernetes.io/metadata.name": "sealtune-w-payments",
                "sealtune.dev/workload-of": "payments",
            }
        }
        if policy in admission.DOMAIN_POLICIES:
            assert spec["paramRef"] == {"name": "payments", "parameterNotFoundAction": "Deny"}
        else:
            assert "paramRef" not in spec
    assert admission.workload_binding("payments", "sealtune-w-payments") == bindings[0]
    with pytest.raises(ValueError):
        admission.workload_binding("payments", "ns", "other-policy")


def test_long_domain_names_give_bounded_distinct_valid_names_and_labels() -> None:
    long_a = "a." * 120 + "one"
    long_b = "a." * 120 + "two"
    assert len(long_a) <= 253
    name_a = admission.binding_name(admission.ACCESS_POLICY, long_a)
    name_b = admission.binding_name(admission.ACCESS_POLICY, long_b)
    assert name_a != name_b
    for name in (name_a, name_b):
        assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name
    assert admission.binding_name(admission.ACCESS_POLICY, long_a) == name_a
    value_a, value_b = names.workload_label_value(long_a), names.workload_label_value(long_b)
    assert value_a != value_b
    for value in (value_a, value_b):
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    namespace = admission.workload_namespace(long_a, "w-long")
    binding = admission.workload_binding(long_a, "w-long")
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector[names.LABEL_WORKLOAD_OF] == namespace["metadata"]["labels"][names.LABEL_WORKLOAD_OF]
    assert binding["spec"]["paramRef"]["name"] == long_a, "the parameter is the domain itself"


def test_workload_namespace_enforces_restricted_and_names_its_domain() -> None:
    ns = admission.workload_namespace("payments", "sealtune-w-payments")
    assert (ns["apiVersion"], ns["kind"], ns["metadata"]["name"]) == (
        "v1",
        "Namespace",
        "sealtune-w-payments",
    )
    assert ns["metadata"]["labels"] == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
        "sealtune.dev/workload-of": "payments",
        "app.kubernetes.io/managed-by": "sealtune",
        "app.kubernetes.io/part-of": "sealtune",
    }
    assert names.LABEL_WORKLOAD_OF == admission.LABEL_WORKLOAD_OF == "sealtune.dev/workload-of"


def test_baseline_network_policy_denies_everything_both_ways() -> None:
    policy = admission.baseline_network_policy("sealtune-w-payments")
    assert policy["metadata"]["name"] == "sealtune-default-deny"
    assert policy["metadata"]["namespace"] == "sealtune-w-payments"
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_user_name_from_a_self_subject_review() -> None:
    assert admission.self_subject_review() == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
    }
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "status": {"userInfo": {"username": OPERATOR, "groups": ["system:serviceaccounts"]}},
    }
    assert admission.username_from_self_subject_review(body) == OPERATOR
    broken: dict[str, Any]
    for broken in ({}, {"status": {}}, {"status": {"userInfo": {"username": ""}}}, {"status": None}):
        with pytest.raises(ValueError, match="username"):
            admission.username_from_self_subject_review(broken)


# What the pod policy's placement rules demand, in Python, checked against what the workload
# builder writes: if either side changes, this fails before the API server refuses real pods.
def same_requirement(term: dict[str, Any], pool: dict[str, Any]) -> bool:
    return (
        term["key"] == pool["key"]
        and term["operator"] == pool["operator"]
        and set(term.get("values", [])) == set(pool.get("values", []))
    )


def placement_admits(pod_spec: dict[str, Any], placement: dict[str, Any]) -> bool:
    pools, regions = placement.get("nodePools", []), placement.get("regions", [])
    terms = (
        pod_spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    in_pools = not pools or (
        bool(terms)
        and all(
            any(
                all(
                    any(same_requirement(te, pe) for te in t.get("matchExpressions", []))
                    for pe in p["matchExpressions"]
                )
                for p in pools
            )
            for t in terms
        )
    )
    in_regions = not regions or (
        bool(terms)
        and all(
            any(
                e["key"] == REGION_LABEL
                and e["operator"] == "In"
                and e.get("values")
                and set(e["values"]) <= set(regions)
                for e in t.get("matchExpressions", [])
            )
            for t in terms
        )
    )
    confidential = not placement.get("requireConfidentialCompute") or (
        pod_spec.get("runtimeClassName") == placement["confidentialRuntimeClassName"]
    )
    return in_pools and in_regions and confidential


PLACEMENTS = {
    "default pool": {},
    "confidential": confidential_placement(),
    "two pools, two regions": {
        "nodePools": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]},
            {
                "matchExpressions": [
                    {"key": "pool", "operator": "In", "values": ["c"]},
                    {"key": "gpu", "operator": "Exists"},
                ]
            },
        ],
        "regions": ["eu-west-1", "eu-central-1"],
    },
    "no pools": {"nodePools": []},
    "regions only": {"nodePools": [], "regions": ["eu-west-1"]},
}


@pytest.mark.parametrize("placement", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_the_pods_the_operator_builds_meet_the_placement_rules(placement: dict[str, Any]) -> None:
    body = finetune_job("tune", "w", "d")
    body["metadata"]["uid"] = "uid-1"
    domain = DataDomain.model_validate(data_domain("d", "team", placement=placement))
    job = indexed_job(FineTuneJob.model_validate(body), domain, Settings())
    pod_spec = job["spec"]["template"]["spec"]
    rendered = domain.spec.placement.to_json()
    assert placement_admits(pod_spec, rendered)


def test_the_placement_rules_refuse_pods_placed_elsewhere() -> None:
    placement = PLACEMENTS["two pools, two regions"]
    inside = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["b", "a"]},
                                {"key": REGION_LABEL, "operator": "In", "values": ["eu-west-1"]},
                            ]
                        }
                    ]
                }
            }
        }
    }
    assert placement_admits(inside, placement)
    assert not placement_admits({}, placement), "no affinity"
    terms = inside["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    escaped = json.loads(json.dumps(inside))
    escaped["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ] = [
        *terms["nodeSelectorTerms"],
        {"matchExpressions": [{"key": REGION_LABEL, "operator": "In", "values": ["us-east-1"]}]},
    ]
    assert not placement_admits(escaped, placement), "an ORed term outside the pools"
    assert not placement_admits({"runtimeClassName": "runc"}, confidential_placement())
