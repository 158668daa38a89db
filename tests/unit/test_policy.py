"""The policy chain, table-driven: each violation names its field and its fix."""

from __future__ import annotations

from typing import Any

import pytest

from sealtune.api.v1alpha1 import DataDomain, FineTuneJob
from sealtune.api.v1alpha1.meta import LabelSelector
from sealtune.policy import evaluate, selector_matches
from tests.support.objects import data_domain, finetune_job

NS = "team-a"


def job(**spec: Any) -> FineTuneJob:
    body = finetune_job("j", NS, "d", **spec)
    body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    return FineTuneJob.model_validate(body)


def domain(**spec: Any) -> DataDomain:
    return DataDomain.model_validate(data_domain("d", NS, **spec))


def secrets(*paths: str) -> dict[str, Any]:
    return {"secrets": [{"vaultPath": p, "fileName": f"s{i}"} for i, p in enumerate(paths)]}


CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str], list[tuple[str, str]]]] = [
    ("admitted", {}, {}, {}, []),
    (
        "namespace not listed",
        {},
        {"access": {"namespaces": ["other"]}},
        {},
        [("metadata.namespace", "NamespaceNotAllowed")],
    ),
    (
        "namespace by selector",
        {},
        {"access": {"namespaces": [], "namespaceSelector": {"matchLabels": {"team": "ml"}}}},
        {"team": "ml"},
        [],
    ),
    (
        "selector does not match",
        {},
        {"access": {"namespaces": [], "namespaceSelector": {"matchLabels": {"team": "ml"}}}},
        {"team": "web"},
        [("metadata.namespace", "NamespaceNotAllowed")],
    ),
    ("own team's secret", secrets("secret/data/team-a/hf"), {}, {}, []),
    (
        "another team's secret",
        secrets("secret/data/team-b/hf"),
        {},
        {},
        [("spec.secrets[0].vaultPath", "SecretPathNotAllowed")],
    ),
    (
        "no secret path admitted",
        secrets("secret/data/team-a/hf"),
        {"access": {"vaultPaths": []}},
        {},
        [("spec.secrets[0].vaultPath", "SecretPathNotAllowed")],
    ),
    (
        "each refused secret named",
        secrets("secret/data/team-a/hf", "secret/data/shared/x", "secret/data/team-a"),
        {},
        {},
        [
            ("spec.secrets[1].vaultPath", "SecretPathNotAllowed"),
            ("spec.secrets[2].vaultPath", "SecretPathNotAllowed"),
        ],
    ),
    (
        "prefix without '/' admits itself",
        secrets("secret/data/shared/hf-token"),
        {"access": {"vaultPaths": ["secret/data/shared/hf-token"]}},
        {},
        [],
    ),
    (
        "prefix without '/' admits what lies below it",
        secrets("secret/data/team-a/x"),
        {"access": {"vaultPaths": ["secret/data/team-a"]}},
        {},
        [],
    ),
    (
        "prefix without '/' stops at its last segment",
        secrets("secret/data/team-ab/x"),
        {"access": {"vaultPaths": ["secret/data/team-a"]}},
        {},
        [("spec.secrets[0].vaultPath", "SecretPathNotAllowed")],
    ),
    (
        "placeholder stands for the job's namespace, not another",
        secrets("kv/data/ml-team-b/x"),
        {"access": {"vaultPaths": ["kv/data/ml-{namespace}/"]}},
        {},
        [("spec.secrets[0].vaultPath", "SecretPathNotAllowed")],
    ),
    (
        "placeholder mid-segment",
        secrets("kv/data/ml-team-a/x"),
        {"access": {"vaultPaths": ["kv/data/ml-{namespace}/"]}},
        {},
        [],
    ),
    (
        "the domain's own store credentials need no prefix",
        {},
        {
            "access": {"vaultPaths": []},
            "source": {"pvc": None, "s3": {"uri": "s3://bucket/x", "credentialsVaultPath": "secret/data/s3"}},
        },
        {},
        [],
    ),
    (
        "method",
        {"method": {"type": "full", "lora": None}},
        {"methods": ["lora"]},
        {},
        [("spec.method.type", "MethodNotAllowed")],
    ),
    (
        "workers",
        {"resources": {"workers": 3}},
        {"limits": {"maxWorkers": 2}},
        {},
        [("spec.resources.workers", "LimitExceeded")],
    ),
    (
        "total GPUs",
        {"resources": {"workers": 2, "gpusPerWorker": 4}},
        {"limits": {"maxTotalGPUs": 6}},
        {},
        [("spec.resources.gpusPerWorker", "LimitExceeded")],
    ),
    (
        "epochs",
        {"training": {"maxSteps": None, "epochs": 9}},
        {"limits": {"maxEpochs": 3}},
        {},
        [("spec.training.epochs", "LimitExceeded")],
    ),
    (
        "DP required",
        {},
        {"privacy": {"requireDifferentialPrivacy": True, "maxEpsilon": 8}},
        {},
        [("spec.privacy.differentialPrivacy", "PrivacyRequired")],
    ),
    (
        "epsilon too high",
        {"privacy": {"differentialPrivacy": {"targetEpsilon": 9}}},
        {"privacy": {"maxEpsilon": 4}},
        {},
        [("spec.privacy.differentialPrivacy.targetEpsilon", "PrivacyRequired")],
    ),
    (
        "gate missing",
        {},
        {"privacy": {"maxCanaryExposure": 5}},
        {},
        [("spec.evaluation.maxCanaryExposure", "PrivacyRequired")],
    ),
    (
        "gate looser",
        {"evaluation": {"maxMembershipInferenceAUC": 0.9}},
        {"privacy": {"maxMembershipInferenceAUC": 0.6}},
        {},
        [("spec.evaluation.maxMembershipInferenceAUC", "PrivacyRequired")],
    ),
    (
        "output written into the data claim",
        {"output": {"storage": {"claimName": "data", "path": "out"}}},
        {},
        {},
        [("spec.output.storage.claimName", "OutputClaimNotAllowed")],
    ),
    (
        "checkpoints without a job key to seal them",
        {"training": {"checkpointEverySteps": 10}},
        {},
        {},
        [("spec.training.checkpointEverySteps", "CheckpointsNeedAKey")],
    ),
    (
        "checkpoints sealed with the job's transit-made key",
        {"training": {"checkpointEverySteps": 10}},
        {
            "encryption": {
                "type": "vaultTransit",
                "vaultTransit": {"keyName": "k", "wrappedDataKey": "vault:v1:x"},
            }
        },
        {},
        [],
    ),
    ("no queue, none required", {}, {"placement": {"queues": [{"name": "team-a-gpu"}]}}, {}, []),
    (
        "a queue required",
        {},
        {"placement": {"requireQueue": True, "queues": [{"name": "team-a-gpu"}]}},
        {},
        [("spec.scheduling.queueName", "QueueRequired")],
    ),
    (
        "the team's own queue",
        {"scheduling": {"queueName": "team-a-gpu"}},
        {"placement": {"requireQueue": True, "queues": [{"name": "team-a-gpu", "namespaces": [NS]}]}},
        {},
        [],
    ),
    (
        "another team's queue",
        {"scheduling": {"queueName": "team-b-gpu"}},
        {"placement": {"queues": [{"name": "team-a-gpu"}, {"name": "team-b-gpu", "namespaces": ["team-b"]}]}},
        {},
        [("spec.scheduling.queueName", "QueueNotAllowed")],
    ),
    (
        "a queue the domain does not list",
        {"scheduling": {"queueName": "anything"}},
        {},
        {},
        [("spec.scheduling.queueName", "QueueNotAllowed")],
    ),
    (
        "every violation reported",
        {"method": {"type": "full", "lora": None}, "resources": {"workers": 5}},
        {"methods": ["lora"], "limits": {"maxWorkers": 1}, "access": {"namespaces": ["x"]}},
        {},
        [
            ("metadata.namespace", "NamespaceNotAllowed"),
            ("spec.method.type", "MethodNotAllowed"),
            ("spec.resources.workers", "LimitExceeded"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("job_spec", "domain_spec", "labels", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_policy(
    job_spec: dict[str, Any],
    domain_spec: dict[str, Any],
    labels: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    violations = evaluate(job(**job_spec), domain(**domain_spec), labels)
    assert [(v.field, v.reason) for v in violations] == expected
    for v in violations:
        assert str(v).startswith(f"{v.field}: ") and len(v.message) > 20


def test_a_refused_secret_path_message_names_the_path_the_domain_and_the_allowed_prefixes() -> None:
    (violation,) = evaluate(
        job(**secrets("secret/data/team-b/hf")),
        domain(access={"vaultPaths": ["secret/data/{namespace}/", "secret/data/shared/hf"]}),
        {},
    )
    assert "secret/data/team-b/hf" in violation.message and "DataDomain d" in violation.message
    assert "secret/data/team-a/, secret/data/shared/hf" in violation.message
    assert "{namespace}" not in violation.message
    assert "ask the domain's admin to add a prefix" in violation.message


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {"a": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_selector_matches(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(LabelSelector.model_validate(selector), labels) is matches
