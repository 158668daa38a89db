"""Hostile input: 10,000 manifests mutated by hypothesis from the samples (wrong types,
oversized values, deep nesting, unicode, '..' and absolute paths, unknown and duplicate keys)
are sent to the real API server with the operator's webhook registered. Each is admitted or
refused with a message that names a field; the operator neither crashes nor logs what it was
sent, and the secret scan finds none of it in any object, Event or raw etcd. Creations are
server-side dry runs (webhooks still run), so nothing is stored."""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
from tests.support.kube import apply
from tests.support.objects import data_domain
from tests.support.operator import OperatorProcess
from tests.support.scan import find_secrets

SAMPLES = Path(__file__).resolve().parents[2] / "crds" / "samples"
EXAMPLES = int(os.environ.get("SEALTUNE_FUZZ_EXAMPLES", "10000"))
CANARY = f"canary-{uuid.uuid4().hex[:12]}"
"""Planted in string fields; it must never reach the operator's log."""
SAMPLE_NAMESPACES = {"FineTuneJob": "ml-research", "ModelArtifact": "ml-research"}
PLURALS = {"FineTuneJob": "finetunejobs", "DataDomain": "datadomains", "ModelArtifact": "modelartifacts"}
# A refusal names a field when it points into spec, metadata or promotion (or names the
# duplicated key, or the namespace).
FIELD_WORDS = re.compile(r"\b(?:spec|metadata|promotion)\b|duplicate field|namespace")


def sample(name: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())


BASES = [
    sample("finetunejob-support-assistant"),
    sample("finetunejob-wiki-qlora"),
    sample("datadomain-crown-jewels"),
    sample("modelartifact-support-assistant-v1"),
]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value in ``node`` (dict keys and list indexes)."""
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"x": value}
    return value


HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    st.text(max_size=64).map(lambda t: t + CANARY),
    st.sampled_from(["../../etc/passwd", "/etc/shadow", "a/../../b", "..", ".", "./x", "~root", "C:\\x"]),
    st.sampled_from(["\u202eevil", "名前", "🚀rocket", "\x00nul", "line\nbreak", "a" * 300]),
    st.integers(min_value=10, max_value=150).map(nested),
    st.integers(min_value=100_000, max_value=1_500_000).map(lambda n: CANARY + "x" * n),
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(kind, request body, what was done): one hostile change to one sample."""
    manifest = copy.deepcopy(draw(st.sampled_from(BASES)))
    kind = manifest["kind"]
    targets = [p for p in paths(manifest) if p[0] not in ("apiVersion", "kind")]
    target = draw(st.sampled_from(targets))
    parent: Any = manifest
    for step in target[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "delete", "unknown key", "duplicate key", "name"]))
    if action == "name":
        manifest["metadata"]["name"] = draw(
            st.one_of(
                st.text(min_size=1, max_size=300), st.sampled_from(["../x", "a/b", "UPPER", "-x", "x" * 254])
            )
        )
    elif action == "delete" and isinstance(parent, dict):
        del parent[target[-1]]
    elif action == "unknown key" and isinstance(parent, dict):
        parent[f"{CANARY}Extra"] = draw(HOSTILE_VALUES)
    else:
        parent[target[-1]] = draw(HOSTILE_VALUES)
    if isinstance(manifest.get("metadata"), dict):
        manifest["metadata"].setdefault("name", "fuzz")
    body = json.dumps(manifest)
    if action == "duplicate key":
        # JSON objects with a key twice: what a careless templating step can emit.
        body = body.replace('"spec": {', '"spec": {"duplicated": 1, "duplicated": 2, ', 1)
    return kind, body.encode(), f"{action} at {'.'.join(map(str, target))}"


@pytest.fixture(scope="module")
def fuzzed_operator(
    cluster: LocalCluster, kubectl: Kubectl, crds_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator with its webhook, watching the samples' namespace, whose domain exists so
    that the webhook has a policy to evaluate."""
    kubectl("create", "namespace", "ml-research", check=False)
    apply(kubectl, data_domain("crown-jewels", "ml-research"))
    operator = OperatorProcess(
        cluster, Path(tmp_path_factory.mktemp("fuzz")) / "operator.log", namespaces="ml-research"
    )
    operator.start()
    yield operator
    operator.stop()
    kubectl("delete", "datadomain", "crown-jewels", "--wait=false", check=False)


def test_every_fuzzed_manifest_is_admitted_or_refused_naming_a_field(
    fuzzed_operator: OperatorProcess, kube_api: Any, cluster: LocalCluster
) -> None:
    operator = fuzzed_operator
    pool, host = kube_api.rest_client.pool_manager, kube_api.configuration.host
    outcomes = {"admitted": 0, "refused": 0}
    unexplained: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated())
    def send(case: tuple[str, bytes, str]) -> None:
        kind, body, what = case
        group = f"{host}/apis/sealtune.dev/v1alpha1"
        scope = "" if kind == "DataDomain" else f"/namespaces/{SAMPLE_NAMESPACES[kind]}"
        url = f"{group}{scope}/{PLURALS[kind]}"
        response = pool.request(
            "POST",
            f"{url}?dryRun=All&fieldValidation=Strict",
            body=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status < 500, f"{what}: the API server failed ({response.status})"
        if response.status < 300:
            outcomes["admitted"] += 1
            return
        outcomes["refused"] += 1
        message = response.data.decode(errors="replace")
        if not FIELD_WORDS.search(message):
            unexplained.append(f"{what}: {message[:300]}")

    send()
    print(f"fuzzed {sum(outcomes.values())} manifests: {outcomes}")  # a figure, shown with -s
    assert not unexplained, "\n".join(unexplained[:10])
    assert operator.process is not None and operator.process.poll() is None, "the operator crashed"
    log = operator.log_path.read_text(errors="replace")
    assert "Traceback" not in log, operator.log_tail()
    # Refusals may quote what was refused (a domain's name, say); nothing else may.
    quoted = [line for line in log.splitlines() if CANARY in line and "does not exist" not in line]
    assert not quoted, f"the operator logged a value it was sent: {quoted[:3]}"
    # Nor did any of it reach an object, an Event or etcd (raw, as stored).
    assert not find_secrets(cluster, [CANARY])
