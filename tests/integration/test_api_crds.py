"""The generated CRDs on the real API server: installed, samples accepted unchanged,
`kubectl explain` teaches, `kubectl get sealtune` lists every kind with its columns."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.support.objects import contains

pytestmark = pytest.mark.integration

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "crds" / "samples").glob("*.yaml"))


@pytest.fixture(scope="module")
def samples(crds_installed: None, kubectl: Kubectl, samples_namespace: str) -> Iterator[list[dict[str, Any]]]:
    """The samples, moved into a fresh namespace, applied as a GitOps tool would."""
    manifests = [yaml.safe_load(p.read_text()) for p in SAMPLES]
    for manifest in manifests:
        if manifest["kind"] != "DataDomain":
            manifest["metadata"]["namespace"] = samples_namespace
    apply(kubectl, manifests)
    yield manifests
    # Namespaced samples go with their namespace; the cluster-scoped domains are removed here.
    for manifest in manifests:
        if manifest["kind"] == "DataDomain":
            kubectl("delete", "datadomain", manifest["metadata"]["name"], "--wait=false", check=False)


@pytest.fixture(scope="module")
def samples_namespace(kubectl: Kubectl) -> Any:
    name = f"api-samples-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def read(kubectl: Kubectl, manifest: dict[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    where = ["-n", meta["namespace"]] if "namespace" in meta else []
    return json.loads(kubectl("get", manifest["kind"].lower(), meta["name"], *where, "-o", "json").stdout)


def apply(kubectl: Kubectl, manifests: list[dict[str, Any]]) -> None:
    # JSON, not YAML: PyYAML writes "2e-4" bare, and kubectl's YAML reader takes it for a number.
    kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )


def test_samples_are_accepted_unchanged(samples: list[dict[str, Any]], kubectl: Kubectl) -> None:
    assert len(samples) == len(SAMPLES) >= 5
    for manifest in samples:
        stored = read(kubectl, manifest)
        assert contains(stored, manifest), f"{manifest['metadata']['name']}: a field was pruned or changed"


def test_server_applies_the_defaults(samples: list[dict[str, Any]], kubectl: Kubectl) -> None:
    wiki = read(kubectl, next(m for m in samples if m["metadata"]["name"] == "internal-wiki"))
    assert wiki["spec"]["retention"] == {
        "trainingCopies": "24h",
        "checkpoints": "168h",
        "logs": "720h",
        "artifacts": "8760h",
        "pinApprovedArtifacts": True,
    }
    assert wiki["spec"]["encryption"] == {"type": "none"}
    job = read(kubectl, next(m for m in samples if m["metadata"]["name"] == "wiki-qlora"))
    assert job["spec"]["scheduling"]["activeDeadlineSeconds"] == 86400
    assert job["spec"]["training"]["seed"] == 42


def test_reapplying_the_samples_changes_nothing(samples: list[dict[str, Any]], kubectl: Kubectl) -> None:
    before = [read(kubectl, m)["metadata"]["resourceVersion"] for m in samples]
    apply(kubectl, samples)
    assert [read(kubectl, m)["metadata"]["resourceVersion"] for m in samples] == before


@pytest.mark.parametrize(
    "path, expected",
    [
        ("finetunejob.spec", ["What to train and how", "domainRef", "Required; immutable"]),
        ("finetunejob.spec.method.qlora.bits", ["Bits per base-model weight", "ENUM: 4 8"]),
        ("finetunejob.spec.secrets.fileName", ["plain name, no '/' or '..'"]),
        ("finetunejob.status.progress", ["Live progress while training", "etaSeconds"]),
        ("datadomain.spec.placement", ["Where jobs may run", "requireConfidentialCompute"]),
        ("datadomain.spec.retention.checkpoints", ["Training checkpoints", "defaults to 168h"]),
        ("modelartifact.promotion.stage", ["Candidate -> Approved -> Revoked"]),
        ("modelartifact.spec.digests.files", ["none left out"]),
        ("ftj.status.conditions.reason", ["CamelCase"]),
    ],
)
def test_explain_prints_the_descriptions(
    crds_installed: None, kubectl: Kubectl, path: str, expected: list[str]
) -> None:
    out = " ".join(kubectl("explain", path).stdout.split())
    for text in expected:
        assert " ".join(text.split()) in out, f"{path}: {text!r} not in:\n{out}"


def test_get_sealtune_lists_every_kind_with_its_columns(
    samples: list[dict[str, Any]], kubectl: Kubectl
) -> None:
    out = kubectl("get", "sealtune", "-A").stdout
    for name in (
        "datadomain.sealtune.dev/crown-jewels",
        "finetunejob.sealtune.dev/wiki-qlora",
        "modelartifact.sealtune.dev/support-assistant-v1",
    ):
        assert name in out
    for header in (
        "CLASSIFICATION",
        "CONFIDENTIAL",
        "PHASE",
        "DOMAIN",
        "METHOD",
        "PROGRESS%",
        "STAGE",
        "VERIFIED",
        "AGE",
    ):
        assert header in out
    domains = kubectl("get", "dd", "crown-jewels", "--no-headers").stdout.split()
    assert domains[:3] == ["crown-jewels", "restricted", "true"]


def test_status_is_a_subresource(
    samples: list[dict[str, Any]], kubectl: Kubectl, samples_namespace: str
) -> None:
    status = {"status": {"phase": "Running", "progress": {"step": 50, "totalSteps": 200, "percent": 25}}}
    # Written through the main resource, status is ignored; through /status it sticks.
    kubectl("patch", "ftj", "wiki-qlora", "-n", samples_namespace, "--type=merge", "-p", json.dumps(status))
    assert "status" not in json.loads(
        kubectl("get", "ftj", "wiki-qlora", "-n", samples_namespace, "-o", "json").stdout
    )
    kubectl(
        "patch",
        "ftj",
        "wiki-qlora",
        "-n",
        samples_namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    row = kubectl("get", "ftj", "wiki-qlora", "-n", samples_namespace, "--no-headers").stdout.split()
    assert row[:5] == ["wiki-qlora", "Running", "internal-wiki", "qlora", "25"]


def test_jobs_are_selectable_by_domain(
    samples: list[dict[str, Any]], kubectl: Kubectl, samples_namespace: str
) -> None:
    out = kubectl(
        "get",
        "ftj",
        "-n",
        samples_namespace,
        "--field-selector",
        "spec.domainRef.name=crown-jewels",
        "-o",
        "name",
    ).stdout
    assert out.split() == ["finetunejob.sealtune.dev/support-assistant"]
