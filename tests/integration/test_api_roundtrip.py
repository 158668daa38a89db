"""Property: any object the models accept, the API server accepts too, and reads back
unchanged (no field pruned, no default that differs from the model's).

Objects are drawn from the generated structural schemas (types, enums, bounds, patterns,
list and string sizes); the few cross-field rules are met by construction, through
per-field strategies below, so the models and the server both see only valid objects.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from sealtune import crdgen
from sealtune.api.v1alpha1 import GROUP, VERSION, DataDomain, FineTuneJob, KubeResource, ModelArtifact
from tests.support.objects import contains

pytestmark = pytest.mark.integration

Strategy = st.SearchStrategy[Any]
ASCII = st.characters(min_codepoint=32, max_codepoint=126)
Override = Callable[[dict[str, Any], str], Strategy]


def scalar(node: dict[str, Any]) -> Strategy:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node["type"]
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = node.get("minimum", 0) + (1 if node.get("exclusiveMinimum") else 0)
        high = node.get("maximum", 2**31) - (1 if node.get("exclusiveMaximum") else 0)
        return st.integers(low, high)
    if kind == "number":
        return st.floats(
            node.get("minimum", -1e6),
            node.get("maximum", 1e6),
            exclude_min=node.get("exclusiveMinimum", False),
            exclude_max=node.get("exclusiveMaximum", False),
            allow_nan=False,
            allow_infinity=False,
            allow_subnormal=False,
        )
    if node.get("format") == "date-time":
        moments = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)).map(
            lambda t: t.replace(microsecond=0)
        )
        return moments.map(lambda t: t.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    low, high = node.get("minLength", 0), node["maxLength"]
    if "pattern" in node:
        texts = st.from_regex(node["pattern"], fullmatch=True, alphabet=ASCII)
        return texts.filter(lambda s: low <= len(s) <= high)
    return st.text(ASCII, min_size=low, max_size=min(high, max(low, 24)))


def from_schema(node: dict[str, Any], path: str, overrides: dict[str, Override]) -> Strategy:
    """Values valid for a structural schema node; ``overrides`` keyed by path suffix."""
    for suffix, override in overrides.items():
        if path.endswith(suffix):
            return override(node, path)
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return free_form
    if node.get("type") == "array":
        items = from_schema(node["items"], f"{path}[]", overrides)
        unique: dict[str, Any] = {}
        if node.get("x-kubernetes-list-type") == "set":
            unique = {"unique": True}
        elif node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            unique = {"unique_by": lambda item: tuple(item.get(k) for k in keys)}
        low = node.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(node["maxItems"], 3)), **unique)
    if node.get("type") == "object":
        return obj(node, path, overrides)
    return scalar(node)


def obj(
    node: dict[str, Any],
    path: str,
    overrides: dict[str, Override],
    *,
    require: tuple[str, ...] = (),
    forbid: tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
) -> Strategy:
    """An object of ``node``: required properties always, optional ones sometimes; ``require``
    and ``forbid`` adjust which, ``fixed`` pins values. Maps (additionalProperties) too."""
    if "additionalProperties" in node:
        values = from_schema(node["additionalProperties"], f"{path}{{}}", overrides)
        keys = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
        return st.dictionaries(keys, values, max_size=min(node.get("maxProperties", 3), 3))
    fixed = fixed or {}
    props = {k: v for k, v in node.get("properties", {}).items() if k not in forbid}
    needed = set(node.get("required", [])) | set(require)

    def strategy(name: str) -> Strategy:
        return (
            st.just(fixed[name]) if name in fixed else from_schema(props[name], f"{path}.{name}", overrides)
        )

    return st.fixed_dictionaries(
        {k: strategy(k) for k in props if k in needed or k in fixed},
        optional={k: strategy(k) for k in props if k not in needed and k not in fixed},
    )


free_form = st.dictionaries(
    st.text(ASCII, min_size=1, max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(ASCII, max_size=12),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(ASCII, min_size=1, max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=4,
)


def exactly_one(*names: str) -> Override:
    return lambda node, path: st.one_of(
        obj(node, path, OVERRIDES, require=(n,), forbid=tuple(set(names) - {n})) for n in names
    )


def method(node: dict[str, Any], path: str) -> Strategy:
    return st.one_of(
        obj(node, path, OVERRIDES, fixed={"type": "lora"}, require=("lora",), forbid=("qlora",)),
        obj(node, path, OVERRIDES, fixed={"type": "qlora"}, require=("lora", "qlora")),
        obj(node, path, OVERRIDES, fixed={"type": "full"}, forbid=("lora", "qlora")),
    )


def encryption(node: dict[str, Any], path: str) -> Strategy:
    return st.one_of(
        obj(node, path, OVERRIDES, fixed={"type": "vaultTransit"}, require=("vaultTransit",)),
        obj(node, path, OVERRIDES, forbid=("type", "vaultTransit")),
    )


def promotion(node: dict[str, Any], path: str) -> Strategy:
    approvals = node["properties"]["approvals"]
    some = st.lists(from_schema(approvals["items"], f"{path}.approvals[]", OVERRIDES), min_size=1, max_size=2)
    return st.one_of(
        obj(node, path, OVERRIDES, fixed={"stage": "Candidate"}, forbid=("revocation",)),
        obj(node, path, OVERRIDES, fixed={"stage": "Approved"}, forbid=("revocation",)).flatmap(
            lambda p: some.map(lambda a: p | {"approvals": a})
        ),
        obj(node, path, OVERRIDES, fixed={"stage": "Revoked"}, require=("revocation",)),
    )


def toleration(node: dict[str, Any], path: str) -> Strategy:
    return st.one_of(
        obj(node, path, OVERRIDES, fixed={"operator": "Exists"}, forbid=("value",)),
        obj(node, path, OVERRIDES, fixed={"operator": "Equal"}, require=("key",)),
    )


def implies(flag: str, needed: str) -> Override:
    """Objects where a true ``flag`` comes with ``needed``."""
    return lambda node, path: st.one_of(
        obj(node, path, OVERRIDES, fixed={flag: True}, require=(needed,)),
        obj(node, path, OVERRIDES, fixed={flag: False}),
    )


cidrs = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda a: str(ipaddress.ip_network(f"{a[0]}/{a[1]}", strict=False)))

rates = st.one_of(
    st.integers(1, 10**8).map(lambda n: f"{n}e-8"),
    st.sampled_from(["2e-4", "0.0001", "1", "0.5", ".3", "1E-5"]),
)

OVERRIDES: dict[str, Override] = {
    "spec.source": exactly_one("pvc", "s3"),
    ".training": lambda node, path: st.one_of(
        obj(node, path, OVERRIDES, require=(n,), forbid=({"epochs", "maxSteps"} - {n}).pop().split())
        for n in ("epochs", "maxSteps")
    ),
    ".method": method,
    "spec.encryption": encryption,
    "spec.placement": lambda node, path: implies(
        "requireConfidentialCompute", "confidentialRuntimeClassName"
    )(node, path).filter(lambda p: not p.get("requireQueue") or p.get("queues")),
    "spec.privacy": lambda node, path: (
        implies("requireDifferentialPrivacy", "maxEpsilon")(node, path)
        if "requireDifferentialPrivacy" in node["properties"]
        else obj(node, path, OVERRIDES)
    ),
    ".deepspeed": lambda node, path: obj(node, path, OVERRIDES).filter(
        lambda d: d.get("offload", "none") == "none" or d.get("zeroStage", 2) >= 2
    ),
    "spec.release": lambda node, path: obj(node, path, OVERRIDES).filter(
        lambda r: not r.get("stages") or r.get("destinations")
    ),
    "tolerations[]": toleration,
    "promotion": promotion,
    ".cidr": lambda node, path: cidrs,
    ".learningRate": lambda node, path: rates,
}


def no_dp_with_zero(spec: dict[str, Any]) -> bool:
    dp = spec.get("privacy", {}).get("differentialPrivacy")
    return dp is None or "deepspeed" not in spec or spec["deepspeed"].get("zeroStage", 2) == 0


def manifests(kind: type[KubeResource]) -> Strategy:
    schema = crdgen.openapi_schema(kind)
    body = obj(schema, "", OVERRIDES, forbid=("apiVersion", "kind", "metadata"), require=("status",))
    if kind is FineTuneJob:
        body = body.filter(lambda b: no_dp_with_zero(b["spec"]))
    return body.map(lambda b: b | {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.KIND.kind})


@pytest.fixture(scope="module")
def custom(crds_installed: None, kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


@pytest.fixture(scope="module")
def roundtrip_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    name = f"api-roundtrip-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def round_trip(
    api: client.CustomObjectsApi, namespace: str, kind: type[KubeResource], manifest: dict[str, Any]
) -> None:
    name = f"p-{uuid.uuid4().hex[:12]}"
    manifest = manifest | {"metadata": {"name": name}}
    # The models accept it and write it back as it came, defaults aside.
    model = kind.model_validate(manifest)
    assert contains(model.to_json(), manifest)
    status = manifest.pop("status")
    plural = kind.KIND.plural
    scope = () if kind.KIND.scope == "Cluster" else (namespace,)
    create = api.create_cluster_custom_object if not scope else api.create_namespaced_custom_object
    patch_status = (
        api.patch_cluster_custom_object_status if not scope else api.patch_namespaced_custom_object_status
    )
    delete = api.delete_cluster_custom_object if not scope else api.delete_namespaced_custom_object
    try:
        create(GROUP, VERSION, *scope, plural, manifest)
        stored = patch_status(GROUP, VERSION, *scope, plural, name, {"status": status})
    finally:
        delete(GROUP, VERSION, *scope, plural, name)
    sent = manifest | {"status": status}
    assert contains(stored, {k: v for k, v in sent.items() if k != "metadata"}), (
        "a field was pruned or changed"
    )
    # Where the server filled in defaults, they are the models' defaults.
    read_back = kind.model_validate(stored)
    assert read_back.model_dump(exclude={"metadata"}) == model.model_dump(exclude={"metadata"})


EXAMPLES = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@EXAMPLES
@given(manifest=manifests(FineTuneJob))
def test_finetunejobs_round_trip(
    custom: client.CustomObjectsApi, roundtrip_namespace: str, manifest: dict[str, Any]
) -> None:
    round_trip(custom, roundtrip_namespace, FineTuneJob, manifest)


@EXAMPLES
@given(manifest=manifests(DataDomain))
def test_datadomains_round_trip(
    custom: client.CustomObjectsApi, roundtrip_namespace: str, manifest: dict[str, Any]
) -> None:
    round_trip(custom, roundtrip_namespace, DataDomain, manifest)


@EXAMPLES
@given(manifest=manifests(ModelArtifact))
def test_modelartifacts_round_trip(
    custom: client.CustomObjectsApi, roundtrip_namespace: str, manifest: dict[str, Any]
) -> None:
    round_trip(custom, roundtrip_namespace, ModelArtifact, manifest)
