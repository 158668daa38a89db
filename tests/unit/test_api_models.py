"""The API models on their own: samples round-trip, Python mirrors of the CEL rules, wire
names, scalar formats and the condition constants."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from sealtune.api.v1alpha1 import (
    KINDS,
    DataDomainSpec,
    FineTuneJob,
    FineTuneJobSpec,
    KubeModel,
    ModelArtifact,
    Promotion,
    conditions,
    parse_duration,
)
from sealtune.api.v1alpha1.base import camel
from sealtune.api.v1alpha1.meta import Condition
from tests.support.objects import contains

pytestmark = pytest.mark.unit

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "crds" / "samples").glob("*.yaml"))
KIND_OF = {kind.KIND.kind: kind for kind in KINDS}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_round_trip(path: Path) -> None:
    manifest = load(path)
    model = KIND_OF[manifest["kind"]].model_validate(manifest)
    dumped = model.to_json()
    assert contains(dumped, manifest), "a field of the sample was lost or changed"
    assert type(model).model_validate(dumped) == model


def test_samples_cover_the_issue() -> None:
    domains = [load(p)["spec"] for p in SAMPLES if load(p)["kind"] == "DataDomain"]
    assert {d["classification"] for d in domains} >= {"restricted", "internal"}
    assert any(d["placement"]["requireConfidentialCompute"] for d in domains if "placement" in d)
    assert sum(load(p)["kind"] == "FineTuneJob" for p in SAMPLES) >= 2


def test_wire_names_follow_kubernetes_conventions() -> None:
    assert camel("max_gpus_per_worker") == "maxGPUsPerWorker"
    assert camel("max_membership_inference_auc") == "maxMembershipInferenceAUC"
    assert camel("key_id") == "keyID"
    assert camel("cidr") == "cidr"

    def models(model: type[BaseModel]) -> set[type[BaseModel]]:
        found = {model}
        for field in model.model_fields.values():
            for arg in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(field.annotation)):
                sub = getattr(__import__(model.__module__, fromlist=["x"]), arg, None)
                if isinstance(sub, type) and issubclass(sub, KubeModel) and sub not in found:
                    found |= models(sub)
        return found

    every = set().union(*(models(kind) for kind in KINDS))
    assert len(every) > 30
    for model in every:
        for name, field in model.model_fields.items():
            assert re.fullmatch(r"[a-z][a-z0-9]*([A-Z][A-Za-z0-9]*)*", field.alias or name), (model, name)
            assert field.description, f"{model.__name__}.{name} has no description"


def job(**changes: Any) -> dict[str, Any]:
    spec = load(SAMPLES[2])["spec"]
    assert load(SAMPLES[2])["kind"] == "FineTuneJob"
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return spec


# The Python side of the CEL rules: the same refusals, the same messages.
INVALID_JOBS = {
    "qlora without bits": (job(method={"type": "qlora", "lora": {}}), "qlora.bits is required"),
    "lora with full": (job(method={"type": "full", "lora": {}}), "lora must not be set"),
    "lora missing": (job(method={"type": "lora"}), "lora is required"),
    "qlora on lora": (
        job(method={"type": "lora", "lora": {}, "qlora": {"bits": 4}}),
        "qlora must not be set",
    ),
    "epochs and maxSteps": (job(training__maxSteps=10), "exactly one of spec.training.epochs"),
    "neither epochs nor maxSteps": (job(training__epochs=None), "exactly one of spec.training.epochs"),
    "a base model without its claim": (job(baseModel__pvc=None), "baseModel.pvc\n  Field required"),
    "DP with ZeRO": (job(deepspeed={"zeroStage": 2}), "DP-SGD does not work with DeepSpeed"),
    "offload at stage 0": (job(deepspeed={"zeroStage": 0, "offload": "cpu"}), "zeroStage 2 or 3"),
    "learning rate above 1": (job(training__learningRate="2"), "(0, 1]"),
    "secret file with a slash": (
        job(secrets=[{"vaultPath": "a/b", "fileName": "a/b"}]),
        "should match pattern",
    ),
    "duplicate secret files": (
        job(secrets=[{"vaultPath": "a/b", "fileName": "f"}, {"vaultPath": "a/c", "fileName": "f"}]),
        "fileName must be distinct",
    ),
    "zero workers": (job(resources__workers=0), "greater than or equal to 1"),
    "delta of 1": (job(privacy__differentialPrivacy__delta=1), "less than 1"),
}


@pytest.mark.parametrize("spec, message", INVALID_JOBS.values(), ids=INVALID_JOBS.keys())
def test_invalid_jobs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        FineTuneJobSpec.model_validate(spec)


def test_long_job_names_are_refused() -> None:
    manifest = load(SAMPLES[2])
    manifest["metadata"]["name"] = "x" * 49
    with pytest.raises(ValidationError, match="at most 48 characters"):
        FineTuneJob.model_validate(manifest)


def test_domain_rules() -> None:
    domain = load(SAMPLES[0])["spec"]
    with pytest.raises(ValidationError, match=re.escape("exactly one of spec.source.pvc")):
        DataDomainSpec.model_validate(
            domain | {"source": domain["source"] | {"s3": {"uri": "s3://bucket/x"}}}
        )
    with pytest.raises(ValidationError, match="vaultTransit is required"):
        DataDomainSpec.model_validate(domain | {"encryption": {"type": "vaultTransit"}})
    with pytest.raises(ValidationError, match="confidentialRuntimeClassName is required"):
        DataDomainSpec.model_validate(domain | {"placement": {"requireConfidentialCompute": True}})
    with pytest.raises(ValidationError, match="maxEpsilon is required"):
        DataDomainSpec.model_validate(domain | {"privacy": {"requireDifferentialPrivacy": True}})
    with pytest.raises(ValidationError, match="IP prefix"):
        DataDomainSpec.model_validate(domain | {"network": {"egress": [{"cidr": "10.0.0.300/8"}]}})
    defaults = DataDomainSpec.model_validate({k: domain[k] for k in ("classification", "source")})
    assert defaults.methods == ["lora", "qlora"]
    assert defaults.access.namespaces == []
    assert defaults.retention.training_copies == "24h"


# Vault policies read '*' and '+' as globs and the job's policy names these paths: a glob in
# one would grant more than the path.
BAD_VAULT_PATHS = ["secret/data/*", "secret/+/x", "secret/data/../team-b/x", "/secret/data/x", "secret//x"]


@pytest.mark.parametrize("path", BAD_VAULT_PATHS)
def test_secret_paths_are_plain(path: str) -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        FineTuneJobSpec.model_validate(job(secrets=[{"vaultPath": path, "fileName": "f"}]))


@pytest.mark.parametrize("prefix", [*BAD_VAULT_PATHS, "secret/data/{namespace}*", "secret/{team}/"])
def test_domain_vault_paths_are_plain_prefixes(prefix: str) -> None:
    domain = load(SAMPLES[0])["spec"]
    with pytest.raises(ValidationError, match="should match pattern"):
        DataDomainSpec.model_validate(domain | {"access": {"vaultPaths": [prefix]}})


def test_domain_vault_paths_take_the_namespace_placeholder() -> None:
    domain = load(SAMPLES[0])["spec"]
    prefixes = ["secret/data/{namespace}/", "secret/data/shared/hf-token", "kv/data/team-{namespace}/x/"]
    spec = DataDomainSpec.model_validate(domain | {"access": {"vaultPaths": prefixes}})
    assert spec.access.vault_paths == prefixes
    assert DataDomainSpec.model_validate(domain | {"access": {}}).access.vault_paths == []


def test_promotion_rules() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="approvals needs an entry"):
        Promotion(stage="Approved")
    with pytest.raises(ValidationError, match="revocation is required"):
        Promotion(stage="Revoked")
    with pytest.raises(ValidationError, match="revocation is required"):
        Promotion.model_validate({"revocation": {"revoker": "a", "revokedAt": now, "reason": "r"}})
    assert Promotion().stage == "Candidate"
    artifact = ModelArtifact.model_validate(load(SAMPLES[4]))
    assert artifact.promotion.stage == "Approved"


def test_time_is_utc_whole_seconds() -> None:
    later = datetime(2025, 1, 1, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2)))
    condition = Condition(type="Ready", status="True", reason="DomainReady", last_transition_time=later)
    assert condition.to_json()["lastTransitionTime"] == "2025-01-01T10:00:00Z"
    with pytest.raises(ValidationError):
        Condition(
            type="Ready", status="True", reason="DomainReady", last_transition_time=datetime(2025, 1, 1)
        )


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_duration("8760h") == timedelta(days=365)
    assert parse_duration("0s") == timedelta(0)
    for bad in ("", "h", "1d", "30", "1m1h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


REASON_ENUMS = [
    e
    for e in vars(conditions).values()
    if isinstance(e, type) and issubclass(e, StrEnum) and e is not StrEnum
]


@pytest.mark.parametrize("enum", REASON_ENUMS, ids=lambda e: e.__name__)
def test_condition_constants_are_camel_case(enum: type[StrEnum]) -> None:
    values = [member.value for member in enum]
    assert len(set(values)) == len(values)
    for value in values:
        assert re.fullmatch(r"[A-Z][a-z0-9]+([A-Z][a-z0-9]*)*", value), value
        Condition(type="Ready", status="False", reason=value, last_transition_time=datetime.now(UTC))


def test_every_reason_enum_is_listed() -> None:
    reasons = {e for e in REASON_ENUMS if e.__name__.endswith("Reason")}
    assert reasons == set(conditions.ALL_REASONS)
