"""Who asked, who approves: admission policies the API server enforces on FineTuneJobs and
ModelArtifacts in every namespace, so they hold while the operator is down.

- ``sealtune-requester`` (a MutatingAdmissionPolicy) stamps each new FineTuneJob with the user
  who created it, in the annotation ``sealtune.dev/requested-by``; the ValidatingAdmissionPolicy
  of the same name refuses a creation whose annotation names anyone else (where the mutating
  policy's API is not served, the user sets it to their own name) and any change to it later.
  The operator copies it into the job's ModelArtifact, where it decides who may approve.
- ``sealtune-artifacts``: only the operator creates ModelArtifacts, each as a Candidate with no
  approvals, and only it writes their status. An approval, revocation or release request is
  appended by the user who makes the request, under their own name (a release request also with
  their groups), and needs the verb ``approve``, ``revoke`` or ``release`` on
  ``modelartifacts/promotion`` (checked by the API server's authorizer, as
  CertificateSigningRequest approval checks ``approve`` on ``signers``). Approved needs every
  gate passed; the job's requester cannot approve unless the domain allowed self-approval when
  the artifact was published.

Cluster admins (system:masters) are trusted here as everywhere in the threat model (they could
unbind these policies anyway): ``sealtune-artifacts`` does not match their requests. Pure
functions, no I/O.
"""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1 import GROUP
from ..names import ANNOTATION_REQUESTED_BY, MANAGED_BY
from .admission import MASTERS_GROUP, cel_string

REQUESTER_POLICY = "sealtune-requester"
ARTIFACT_POLICY = "sealtune-artifacts"
VALIDATING = (REQUESTER_POLICY, ARTIFACT_POLICY)
MUTATING = (REQUESTER_POLICY,)
MUTATING_API_VERSION = "admissionregistration.k8s.io/v1beta1"
"""MutatingAdmissionPolicy is beta in Kubernetes 1.34 (feature gate MutatingAdmissionPolicy
and runtime config admissionregistration.k8s.io/v1beta1); GA in 1.36."""

Manifest = dict[str, Any]

_REQUESTED_BY = f"object.metadata.?annotations[{cel_string(ANNOTATION_REQUESTED_BY)}]"
_ADMIN = f"request.userInfo.?groups.orValue([]).exists(g, g == {cel_string(MASTERS_GROUP)})"


def _check(rule: str, policy: str, expression: str, message: str) -> Manifest:
    """One validation; its message (a CEL expression) starts with ``<policy>/<rule>:``."""
    return {
        "expression": expression,
        "messageExpression": f"{cel_string(f'{policy}/{rule}: ')} + ({message})",
        "reason": "Forbidden",
    }


def _rules(resources: list[str], operations: list[str]) -> list[Manifest]:
    return [
        {
            "apiGroups": [GROUP],
            "apiVersions": ["*"],
            "operations": operations,
            "resources": resources,
            "scope": "Namespaced",
        }
    ]


def _validating(
    name: str,
    rules: list[Manifest],
    validations: list[Manifest],
    variables: list[Manifest],
    match_conditions: list[Manifest] | None = None,
) -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"matchPolicy": "Equivalent", "resourceRules": rules},
            **({"matchConditions": match_conditions} if match_conditions else {}),
            "variables": variables,
            "validations": validations,
        },
    }


def requester_mutation() -> Manifest:
    """Stamps a new FineTuneJob with its creator's user name (server-side apply semantics: the
    annotation is set, the others stay)."""
    annotation = cel_string(ANNOTATION_REQUESTED_BY)
    stamp = "Object{metadata: Object.metadata{annotations: {" + annotation + ": request.userInfo.username}}}"
    return {
        "apiVersion": MUTATING_API_VERSION,
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": REQUESTER_POLICY, "labels": dict(MANAGED_BY)},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {
                "matchPolicy": "Equivalent",
                "resourceRules": _rules(["finetunejobs"], ["CREATE"]),
            },
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": stamp}}],
        },
    }


def requester_policy() -> Manifest:
    """The stamp is the creator's own name, and stays."""
    p = REQUESTER_POLICY
    return _validating(
        p,
        _rules(["finetunejobs"], ["CREATE", "UPDATE"]),
        [
            _check(
                "creator",
                p,
                "request.operation != 'CREATE' || variables.requestedBy == request.userInfo.username",
                f"'metadata.annotations[{ANNOTATION_REQUESTED_BY}] must name the user who creates the "
                "FineTuneJob, ' + request.userInfo.username + ': remove it (the API server stamps "
                "it where MutatingAdmissionPolicy is served) or set it to your user name.'",
            ),
            _check(
                "unchanged",
                p,
                "request.operation != 'UPDATE' || variables.requestedBy == "
                f"oldObject.metadata.?annotations[{cel_string(ANNOTATION_REQUESTED_BY)}].orValue('')",
                f"'metadata.annotations[{ANNOTATION_REQUESTED_BY}] records who created the FineTuneJob "
                "and cannot change; keep its value.'",
            ),
        ],
        [{"name": "requestedBy", "expression": f"{_REQUESTED_BY}.orValue('')"}],
    )


def _authorized(verb: str) -> str:
    return (
        f"authorizer.group({cel_string(GROUP)}).resource('modelartifacts').subresource('promotion')"
        f".namespace(request.namespace).name(request.name).check({cel_string(verb)}).allowed()"
    )


def artifact_policy(operator_username: str) -> Manifest:
    """ModelArtifacts: the operator's record, people's decisions (see the module's text)."""
    if not operator_username:
        raise ValueError("the operator's user name is empty")
    p, operator = ARTIFACT_POLICY, cel_string(operator_username)
    return _validating(
        p,
        _rules(["modelartifacts", "modelartifacts/status"], ["CREATE", "UPDATE"]),
        [
            _check(
                "creator",
                p,
                "request.operation != 'CREATE' || variables.operator",
                "request.userInfo.username + ' may not create ModelArtifacts; the sealtune operator "
                "publishes each one from the result of a FineTuneJob it ran.'",
            ),
            _check(
                "starts-as-candidate",
                p,
                "request.operation != 'CREATE' || (variables.stage == 'Candidate' && "
                "size(variables.approvals) == 0 && size(variables.releases) == 0)",
                "'a new ModelArtifact starts with promotion.stage Candidate, no approvals and no "
                "release requests; approve it afterwards (sealtune approve).'",
            ),
            _check(
                "status-writer",
                p,
                "variables.subresource != 'status' || variables.operator",
                "request.userInfo.username + ' may not write the status of ModelArtifacts; it is "
                "what the sealtune operator observed.'",
            ),
            _check(
                "approver-is-requester",
                p,
                "variables.added.all(a, a.approver == request.userInfo.username)",
                "'promotion.approvals: a new approval must name its approver as the user who makes "
                "the request, ' + request.userInfo.username + '.'",
            ),
            _check(
                "approve-verb",
                p,
                f"!variables.approving || {_authorized('approve')}",
                "request.userInfo.username + ' may not approve ModelArtifacts in ' + "
                "request.namespace + ': that needs the verb approve on "
                "modelartifacts/promotion (the approver role of the chart).'",
            ),
            _check(
                "gates-passed",
                p,
                "variables.stage != 'Approved' || (object.spec.evaluation.passed && "
                "object.spec.evaluation.results.?gates.orValue([]).all(g, g.passed))",
                "'promotion.stage Approved needs every evaluation gate passed (spec.evaluation); "
                "this artifact failed ' + object.spec.evaluation.results.?gates.orValue([])"
                ".filter(g, !g.passed).map(g, g.name).join(', ') + '. Train again instead.'",
            ),
            _check(
                "no-self-approval",
                p,
                "!variables.approving || object.spec.?allowSelfApproval.orValue(false) || "
                "(variables.requester != '' && variables.requester != request.userInfo.username)",
                "variables.requester == '' ? 'nobody may approve this ModelArtifact: its job did not "
                "record who requested it (spec.source.requestedBy), and its domain does not allow "
                "self-approval.' : request.userInfo.username + ' requested the FineTuneJob that "
                "made this ModelArtifact and may not approve it; ask another approver, or a domain "
                "admin to set spec.allowSelfApproval on the DataDomain.'",
            ),
            _check(
                "releaser-is-requester",
                p,
                "variables.addedReleases.all(r, r.requester == request.userInfo.username && "
                "r.?groups.orValue([]) == request.userInfo.?groups.orValue([]))",
                "'promotion.releases: a new request must name as requester the user who makes the "
                "request, ' + request.userInfo.username + ', and as groups those the API server "
                "authenticated for that user (sealtune export fills both in).'",
            ),
            _check(
                "release-verb",
                p,
                f"size(variables.addedReleases) == 0 || {_authorized('release')}",
                "request.userInfo.username + ' may not request the files of ModelArtifacts in ' + "
                "request.namespace + ': that needs the verb release on "
                "modelartifacts/promotion (the releaser role of the chart).'",
            ),
            _check(
                "revoker-is-requester",
                p,
                "!variables.revoking || object.promotion.revocation.revoker == request.userInfo.username",
                "'promotion.revocation.revoker must be the user who makes the request, ' + "
                "request.userInfo.username + '.'",
            ),
            _check(
                "revoke-verb",
                p,
                f"!variables.revoking || {_authorized('revoke')}",
                "request.userInfo.username + ' may not revoke ModelArtifacts in ' + "
                "request.namespace + ': that needs the verb revoke on modelartifacts/promotion.'",
            ),
        ],
        [
            {"name": "subresource", "expression": "request.?subResource.orValue('')"},
            {"name": "operator", "expression": f"request.userInfo.username == {operator}"},
            {"name": "stage", "expression": "object.?promotion.?stage.orValue('Candidate')"},
            {"name": "approvals", "expression": "object.?promotion.?approvals.orValue([])"},
            {"name": "releases", "expression": "object.?promotion.?releases.orValue([])"},
            {
                "name": "added",
                "expression": "request.operation != 'UPDATE' ? [] : variables.approvals.filter(a, "
                "!(a in oldObject.?promotion.?approvals.orValue([])))",
            },
            {
                "name": "addedReleases",
                "expression": "request.operation != 'UPDATE' ? variables.releases : variables.releases"
                ".filter(r, !(r in oldObject.?promotion.?releases.orValue([])))",
            },
            {
                "name": "approving",
                "expression": "size(variables.added) > 0 || (variables.stage == 'Approved' && "
                "request.operation == 'UPDATE' && oldObject.?promotion.?stage.orValue('Candidate') != "
                "'Approved')",
            },
            {
                "name": "revoking",
                "expression": "request.operation == 'UPDATE' && has(object.promotion) && "
                "has(object.promotion.revocation) && !(has(oldObject.promotion) && "
                "has(oldObject.promotion.revocation))",
            },
            {"name": "requester", "expression": "object.spec.source.?requestedBy.orValue('')"},
        ],
        # Cluster admins are trusted (they could unbind the policy): they may also write
        # artifacts directly, as the samples and the API tests do.
        [{"name": "not-a-cluster-admin", "expression": f"!{_ADMIN}"}],
    )


def _binding(policy: str, kind: str, api_version: str) -> Manifest:
    """Binds ``policy`` in every namespace."""
    spec: Manifest = {"policyName": policy}
    if kind == "ValidatingAdmissionPolicyBinding":
        spec["validationActions"] = ["Deny"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": policy, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }


def validating_policies(operator_username: str) -> list[Manifest]:
    """The validating policies and their bindings."""
    bind = "ValidatingAdmissionPolicyBinding"
    return [
        requester_policy(),
        _binding(REQUESTER_POLICY, bind, "admissionregistration.k8s.io/v1"),
        artifact_policy(operator_username),
        _binding(ARTIFACT_POLICY, bind, "admissionregistration.k8s.io/v1"),
    ]


def mutating_policies() -> list[Manifest]:
    """The requester stamp and its binding (served where MutatingAdmissionPolicy is)."""
    return [
        requester_mutation(),
        _binding(REQUESTER_POLICY, "MutatingAdmissionPolicyBinding", MUTATING_API_VERSION),
    ]
