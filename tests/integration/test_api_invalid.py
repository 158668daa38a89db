"""Bad input refused by the API server itself, each refusal naming the field: wrong types,
out-of-range values, missing fields, forbidden combinations, changes to immutable fields and
illegal stage moves. Creations are server-side dry runs; updates run against a stored object."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from tests.conftest import Kubectl

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "crds" / "samples"
DELETE = object()


def sample(name: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


BASES = {
    "job": sample("finetunejob-support-assistant"),
    "qlora": sample("finetunejob-wiki-qlora"),
    "domain": sample("datadomain-crown-jewels"),
    "artifact": sample("modelartifact-support-assistant-v1"),
}


def edit(manifest: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` with dotted paths set (or removed with DELETE); a number in the
    path indexes a list."""
    result = copy.deepcopy(manifest)
    for path, value in changes.items():
        *parents, leaf = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = result
        for part in parents:
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return result


class Case(NamedTuple):
    base: str
    changes: dict[str, Any]
    expected: tuple[str, ...]
    """Fragments of the API server's answer: the field's path first, then what is wrong."""
    update: bool = False
    """Apply ``changes`` to a stored object instead of creating it changed."""


SECRET = {"vaultPath": "secret/data/x", "fileName": "token"}
TIME = "2025-07-02T00:00:00Z"

CASES: dict[str, Case] = {
    # Wrong types.
    "workers as text": Case(
        "job", {"spec.resources.workers": "two"}, ("spec.resources.workers", "expected numeric")
    ),
    "packing as text": Case("job", {"spec.training.packing": "yes"}, ("spec.training.packing", "boolean")),
    "learning rate as number": Case(
        "job", {"spec.training.learningRate": 0.0002}, ("spec.training.learningRate", "string")
    ),
    "secrets as object": Case("job", {"spec.secrets": {"a": "b"}}, ("spec.secrets", "expected list")),
    "target modules as text": Case(
        "job",
        {"spec.method.lora.targetModules": "q_proj"},
        ("spec.method.lora.targetModules", "expected list"),
    ),
    "classification as list": Case(
        "domain", {"spec.classification": ["restricted"]}, ("spec.classification", "string")
    ),
    # Out of range and malformed values.
    "zero workers": Case(
        "job", {"spec.resources.workers": 0}, ("spec.resources.workers", "greater than or equal to 1")
    ),
    "17 gpus per worker": Case(
        "job",
        {"spec.resources.gpusPerWorker": 17},
        ("spec.resources.gpusPerWorker", "less than or equal to 16"),
    ),
    "delta of 1": Case(
        "job",
        {"spec.privacy.differentialPrivacy.delta": 1},
        ("spec.privacy.differentialPrivacy.delta", "less than 1"),
    ),
    "delta of 0": Case(
        "job",
        {"spec.privacy.differentialPrivacy.delta": 0},
        ("spec.privacy.differentialPrivacy.delta", "greater than 0"),
    ),
    "dropout of 1": Case("job", {"spec.method.lora.dropout": 1}, ("spec.method.lora.dropout", "less than 1")),
    "learning rate of 2": Case(
        "job", {"spec.training.learningRate": "2"}, ("spec.training.learningRate", "(0, 1]")
    ),
    "learning rate of 0": Case(
        "job", {"spec.training.learningRate": "0.0"}, ("spec.training.learningRate", "(0, 1]")
    ),
    "10 s deadline": Case(
        "job",
        {"spec.scheduling.activeDeadlineSeconds": 10},
        ("spec.scheduling.activeDeadlineSeconds", "greater than or equal to 60"),
    ),
    "negative backoff": Case(
        "job",
        {"spec.scheduling.backoffLimit": -1},
        ("spec.scheduling.backoffLimit", "greater than or equal to 0"),
    ),
    "MIA AUC below 0.5": Case(
        "job",
        {"spec.evaluation.maxMembershipInferenceAUC": 0.4},
        ("spec.evaluation.maxMembershipInferenceAUC", "greater than or equal to 0.5"),
    ),
    "glob in a secret path": Case(
        "job", {"spec.secrets.0.vaultPath": "secret/data/*"}, ("spec.secrets[0].vaultPath", "should match")
    ),
    "glob in a domain's vault path": Case(
        "domain", {"spec.access.vaultPaths": ["secret/+/x"]}, ("spec.access.vaultPaths[0]", "should match")
    ),
    "memory not a quantity": Case(
        "job", {"spec.resources.memory": "lots"}, ("spec.resources.memory", "should match")
    ),
    "short digest": Case(
        "job", {"spec.baseModel.digest": "sha256:abc"}, ("spec.baseModel.digest", "should match")
    ),
    "queue name with capitals": Case(
        "job", {"spec.scheduling.queueName": "Team_A"}, ("spec.scheduling.queueName", "should match")
    ),
    "17 secrets": Case(
        "job",
        {"spec.secrets": [{"vaultPath": "secret/x", "fileName": f"f{i}"} for i in range(17)]},
        ("spec.secrets", "must have at most 16 items"),
    ),
    "name too long": Case(
        "job", {"metadata.name": "j" * 49}, ("metadata.name must be at most 48 characters",)
    ),
    "retention in days": Case(
        "domain", {"spec.retention.checkpoints": "7d"}, ("spec.retention.checkpoints", "should match")
    ),
    "bucket URI with ..": Case(
        "domain",
        {"spec.source.pvc": DELETE, "spec.source.s3": {"uri": "s3://bucket/../other"}},
        ("spec.source.s3.uri", "should match"),
    ),
    # Enums.
    "unknown method": Case("job", {"spec.method.type": "prefix"}, ("spec.method.type", "Unsupported value")),
    "int8 precision": Case(
        "job", {"spec.training.precision": "int8"}, ("spec.training.precision", "Unsupported value")
    ),
    "3-bit qlora": Case(
        "qlora", {"spec.method.qlora.bits": 3}, ("spec.method.qlora.bits", "Unsupported value")
    ),
    "secret classification": Case(
        "domain", {"spec.classification": "secret"}, ("spec.classification", "Unsupported value")
    ),
    "stage Deployed": Case(
        "artifact", {"promotion.stage": "Deployed"}, ("promotion.stage", "Unsupported value")
    ),
    # Missing required fields.
    "no spec": Case("job", {"spec": DELETE}, ("spec", "Required value")),
    "no domainRef": Case("job", {"spec.domainRef": DELETE}, ("spec.domainRef", "Required value")),
    "no output": Case("job", {"spec.output": DELETE}, ("spec.output", "Required value")),
    "no base model digest": Case(
        "job", {"spec.baseModel.digest": DELETE}, ("spec.baseModel.digest", "Required value")
    ),
    "no method type": Case("job", {"spec.method.type": DELETE}, ("spec.method.type", "Required value")),
    "secret without path": Case(
        "job", {"spec.secrets": [{"fileName": "token"}]}, ("spec.secrets[0].vaultPath", "Required value")
    ),
    "no manifest digest": Case(
        "domain", {"spec.source.manifestDigest": DELETE}, ("spec.source.manifestDigest", "Required value")
    ),
    "artifact without signature": Case(
        "artifact", {"spec.signature": DELETE}, ("spec.signature", "Required value")
    ),
    # Forbidden combinations (CEL).
    "qlora without bits": Case(
        "qlora",
        {"spec.method.qlora": DELETE},
        ("spec.method.qlora.bits is required when spec.method.type is qlora",),
    ),
    "full with lora settings": Case(
        "job",
        {"spec.method.type": "full"},
        ("spec.method.lora must not be set when spec.method.type is full",),
    ),
    "lora without settings": Case(
        "job", {"spec.method.lora": DELETE}, ("spec.method.lora is required when spec.method.type is lora",)
    ),
    "qlora settings on lora": Case(
        "job", {"spec.method.qlora": {"bits": 4}}, ("spec.method.qlora must not be set unless",)
    ),
    "epochs and maxSteps": Case(
        "job",
        {"spec.training.maxSteps": 100},
        ("exactly one of spec.training.epochs and spec.training.maxSteps",),
    ),
    "neither epochs nor maxSteps": Case(
        "job",
        {"spec.training.epochs": DELETE},
        ("exactly one of spec.training.epochs and spec.training.maxSteps",),
    ),
    "a base model without its claim": Case("job", {"spec.baseModel.pvc": DELETE}, ("spec.baseModel.pvc",)),
    "DP with ZeRO": Case(
        "job", {"spec.deepspeed": {"zeroStage": 3}}, ("spec.deepspeed.zeroStage must be 0", "DP-SGD")
    ),
    "CPU offload without ZeRO": Case(
        "qlora",
        {"spec.deepspeed.zeroStage": 0},
        ("spec.deepspeed.offload cpu needs spec.deepspeed.zeroStage 2 or 3",),
    ),
    "secret file ..": Case(
        "job", {"spec.secrets": [SECRET | {"fileName": ".."}]}, ("spec.secrets[0]", "plain file name")
    ),
    "secret file with slash": Case(
        "job", {"spec.secrets": [SECRET | {"fileName": "a/b"}]}, ("spec.secrets[0]", "plain file name")
    ),
    "secret file twice": Case(
        "job",
        {"spec.secrets": [SECRET, SECRET | {"vaultPath": "secret/y"}]},
        ("spec.secrets", 'duplicate entries for key [fileName="token"]'),
    ),
    "PVC and S3 source": Case(
        "domain",
        {"spec.source.s3": {"uri": "s3://bucket/x"}},
        ("exactly one of spec.source.pvc and spec.source.s3",),
    ),
    "no source": Case(
        "domain", {"spec.source.pvc": DELETE}, ("exactly one of spec.source.pvc and spec.source.s3",)
    ),
    "confidential without RuntimeClass": Case(
        "domain",
        {"spec.placement.confidentialRuntimeClassName": DELETE},
        ("spec.placement.confidentialRuntimeClassName is required",),
    ),
    "transit without key": Case(
        "domain", {"spec.encryption.vaultTransit": DELETE}, ("spec.encryption.vaultTransit is required",)
    ),
    "key without transit": Case(
        "domain",
        {"spec.encryption.type": "none"},
        ("spec.encryption.vaultTransit is required", "forbidden otherwise"),
    ),
    "DP required without epsilon": Case(
        "domain", {"spec.privacy.maxEpsilon": DELETE}, ("spec.privacy.maxEpsilon is required",)
    ),
    "bad egress CIDR": Case(
        "domain", {"spec.network.egress": [{"cidr": "10.0.0.0/33"}]}, ("spec.network.egress[0]", "IP prefix")
    ),
    "no methods": Case("domain", {"spec.methods": []}, ("spec.methods", "at least 1 items")),
    "lora twice": Case("domain", {"spec.methods": ["lora", "lora"]}, ("spec.methods", "duplicate entries")),
    "Exists toleration with value": Case(
        "domain",
        {"spec.placement.tolerations.0.value": "x"},
        ("spec.placement.tolerations[0]", "value must be empty"),
    ),
    "artifact without files": Case(
        "artifact", {"spec.digests.files": []}, ("spec.digests.files", "at least 1 items")
    ),
    "file path with ..": Case(
        "artifact",
        {"spec.digests.files.0.path": "../etc/passwd"},
        ("spec.digests.files[0].path", "should match"),
    ),
    "absolute file path": Case(
        "artifact",
        {"spec.digests.files.0.path": "/etc/passwd"},
        ("spec.digests.files[0].path", "should match"),
    ),
    "Approved without approvals": Case(
        "artifact", {"promotion.approvals": DELETE}, ("promotion.approvals needs an entry",)
    ),
    "Revoked without revocation": Case(
        "artifact", {"promotion.stage": "Revoked"}, ("promotion.revocation is required",)
    ),
    # Immutable fields and illegal stage moves (updates of a stored object).
    "domainRef changed": Case(
        "job", {"spec.domainRef.name": "internal-wiki"}, ("spec.domainRef is immutable",), update=True
    ),
    "method changed": Case("job", {"spec.method.lora.r": 8}, ("spec.method is immutable",), update=True),
    "base model changed": Case(
        "job", {"spec.baseModel.pvc.path": "llama-70b"}, ("spec.baseModel is immutable",), update=True
    ),
    "artifact spec changed": Case(
        "artifact", {"spec.digests.files.0.size": 722}, ("spec is immutable",), update=True
    ),
    "artifact provenance changed": Case(
        "artifact", {"spec.provenance.predicateType": "x"}, ("spec is immutable",), update=True
    ),
    "Approved back to Candidate": Case(
        "artifact", {"promotion.stage": "Candidate"}, ("promotion.stage may only move",), update=True
    ),
    "approval removed": Case(
        "artifact",
        {"promotion.approvals.0.reason": "rewritten"},
        ("promotion.approvals is append-only",),
        update=True,
    ),
}
# Moves out of Revoked need a Revoked artifact to start from.
REVOKED = {
    "promotion.stage": "Revoked",
    "promotion.revocation": {"revoker": "bob@example.com", "revokedAt": TIME, "reason": "leaked canary"},
}
REVOKED_CASES: dict[str, Case] = {
    "Revoked back to Approved": Case(
        "artifact",
        {"promotion.stage": "Approved", "promotion.revocation": DELETE},
        ("promotion.stage may only move",),
        update=True,
    ),
    "Revoked approvals extended": Case(
        "artifact",
        {
            "promotion.approvals": [
                *BASES["artifact"]["promotion"]["approvals"],
                {"approver": "c", "approvedAt": TIME, "reason": "r"},
            ]
        },
        ("promotion is final once promotion.stage is Revoked",),
        update=True,
    ),
}


@pytest.fixture(scope="module")
def api_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"api-invalid-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def place(manifest: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    if manifest["kind"] != "DataDomain":
        manifest["metadata"]["namespace"] = namespace
    manifest["metadata"]["name"] = name
    return manifest


def apply(kubectl: Kubectl, manifest: dict[str, Any], *flags: str, check: bool = True) -> Any:
    # JSON, not YAML, so that strings such as "2e-4" stay strings.
    return kubectl("apply", "--server-side", *flags, "-f", "-", input=json.dumps(manifest), check=check)


def refused(kubectl: Kubectl, case: Case, namespace: str, start: dict[str, Any] | None = None) -> str:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    base = place(BASES[case.base], namespace, name)
    if case.update:
        stored = edit(base, start or {})
        apply(kubectl, stored)
        base = stored
    bad = edit(base, case.changes)
    if "metadata.name" not in case.changes:
        bad["metadata"]["name"] = name
    result = apply(kubectl, bad, "--dry-run=server", check=False)
    if case.update:
        kind = case.base if case.base == "domain" else BASES[case.base]["kind"].lower()
        kubectl("delete", kind if kind != "domain" else "datadomain", name, "-n", namespace, "--wait=false")
    assert result.returncode != 0, f"accepted: {json.dumps(case.changes)}"
    return " ".join(result.stderr.split())


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_refused_with_the_field_named(
    crds_installed: None, kubectl: Kubectl, api_namespace: str, case: Case
) -> None:
    message = refused(kubectl, case, api_namespace)
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in: {message}"


@pytest.mark.parametrize("case", REVOKED_CASES.values(), ids=REVOKED_CASES.keys())
def test_revoked_is_final(crds_installed: None, kubectl: Kubectl, api_namespace: str, case: Case) -> None:
    message = refused(kubectl, case, api_namespace, start=REVOKED)
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) + len(REVOKED_CASES) >= 40


@pytest.mark.parametrize(
    "base, changes",
    [
        ("job", {"spec.training.epochs": 3, "spec.scheduling.suspend": True}),
        ("job", {"spec.resources.workers": 2, "spec.secrets": []}),
        ("artifact", {"promotion.stage": "Revoked", "promotion.revocation": REVOKED["promotion.revocation"]}),
    ],
)
def test_mutable_fields_may_change(
    crds_installed: None, kubectl: Kubectl, api_namespace: str, base: str, changes: dict[str, Any]
) -> None:
    """The rules refuse what they should and no more: training, resources, scheduling and
    secrets may change; an Approved artifact may be revoked."""
    stored = place(BASES[base], api_namespace, f"ok-{uuid.uuid4().hex[:8]}")
    apply(kubectl, stored)
    apply(kubectl, edit(stored, changes))
    candidate = place(BASES["artifact"], api_namespace, f"ok-{uuid.uuid4().hex[:8]}")
    candidate["promotion"] = {"stage": "Candidate"}
    apply(kubectl, candidate)
    apply(
        kubectl,
        edit(
            candidate,
            {
                "promotion.stage": "Approved",
                "promotion.approvals": BASES["artifact"]["promotion"]["approvals"],
            },
        ),
    )
