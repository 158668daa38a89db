"""The CRD generator: structural-schema rules over every generated CRD, the rewrites that get
there, and crds/ matching the models (the `hack/gen-crds --check` of the test suite)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from sealtune import crdgen
from sealtune.api.v1alpha1 import KINDS, DataDomain, FineTuneJob, ModelArtifact
from sealtune.api.v1alpha1.base import KindInfo, KubeModel, KubeResource, Rule
from sealtune.api.v1alpha1.datadomain import Retention

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
ROOT_FIELDS = {"apiVersion", "kind", "metadata"}


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


SCHEMAS = {kind.KIND.kind: crdgen.openapi_schema(kind) for kind in KINDS}
NODES = [(f"{kind}{path}", node) for kind, schema in SCHEMAS.items() for path, node in walk(schema)]


def nodes_where(predicate: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(path, node) for path, node in NODES if predicate(node)]


def test_crds_dir_matches_the_models() -> None:
    wanted = crdgen.render_all()
    on_disk = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(wanted), "crds/ is stale: run hack/gen-crds"
    for name, text in wanted.items():
        diff = difflib.unified_diff(
            on_disk[name].splitlines(), text.splitlines(), "on disk", "models", lineterm=""
        )
        assert on_disk[name] == text, f"crds/{name} is stale, run hack/gen-crds:\n" + "\n".join(diff)


def test_output_is_deterministic() -> None:
    assert crdgen.render_all() == crdgen.render_all()


@pytest.mark.parametrize("key", ["$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "title", "nullable"])
def test_no_non_structural_keywords(key: str) -> None:
    assert nodes_where(lambda n: key in n) == []


def test_every_node_is_typed() -> None:
    untyped = nodes_where(lambda n: "type" not in n and not n.get("x-kubernetes-preserve-unknown-fields"))
    assert untyped == []


def test_every_property_is_described() -> None:
    # Items of lists and values of maps are described by the property holding them.
    undescribed = [
        path
        for path, node in NODES
        if "description" not in node and not path.endswith(("[]", "{}", ".metadata"))
    ]
    assert undescribed == []


def test_descriptions_are_reflowed() -> None:
    assert nodes_where(lambda n: "\n" in n.get("description", "").replace("\n\n", "")) == []


def test_every_string_is_bounded() -> None:
    unbounded = nodes_where(lambda n: n.get("type") == "string" and "maxLength" not in n and "enum" not in n)
    assert [p for p, _ in unbounded if p.rsplit(".", 1)[-1] not in ROOT_FIELDS] == []


def test_every_list_and_map_is_bounded() -> None:
    assert nodes_where(lambda n: n.get("type") == "array" and "maxItems" not in n) == []
    assert (
        nodes_where(lambda n: isinstance(n.get("additionalProperties"), dict) and "maxProperties" not in n)
        == []
    )


def test_exclusive_bounds_are_draft4_booleans() -> None:
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        assert nodes_where(lambda n, k=key: k in n and n[k] is not True) == []
    delta = SCHEMAS["FineTuneJob"]["properties"]["spec"]["properties"]["privacy"]["properties"]
    delta = delta["differentialPrivacy"]["properties"]["delta"]
    assert delta | {"description": ""} == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
        "default": 1e-5,
        "description": "",
    }


def test_objects_have_either_properties_or_additional_properties() -> None:
    assert nodes_where(lambda n: "properties" in n and "additionalProperties" in n) == []


def test_required_properties_exist_and_have_no_default() -> None:
    for path, node in nodes_where(lambda n: "required" in n):
        for name in node["required"]:
            assert name in node["properties"], f"{path}.{name}"
            assert "default" not in node["properties"][name], f"{path}.{name}"


def test_list_map_keys_are_required_scalars() -> None:
    maps = nodes_where(lambda n: n.get("x-kubernetes-list-type") == "map")
    assert maps
    for path, node in maps:
        item = node["items"]
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in item.get("required", []), f"{path}: {key}"
            assert item["properties"][key]["type"] in ("string", "integer"), f"{path}: {key}"


def test_list_sets_hold_scalars() -> None:
    for path, node in nodes_where(lambda n: n.get("x-kubernetes-list-type") == "set"):
        assert node["items"]["type"] in ("string", "integer"), path


def test_every_cel_rule_has_a_message_naming_a_fix() -> None:
    rules = [(p, r) for p, n in NODES for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 15
    for path, rule in rules:
        assert set(rule) == {"rule", "message"}, path
        assert len(rule["message"]) > 20, path


def test_only_free_form_provenance_preserves_unknown_fields() -> None:
    preserved = [p for p, _ in nodes_where(lambda n: n.get("x-kubernetes-preserve-unknown-fields"))]
    assert preserved == ["ModelArtifact.spec.provenance"]


def test_immutability_rules() -> None:
    spec = SCHEMAS["FineTuneJob"]["properties"]["spec"]["properties"]
    for field in ("domainRef", "baseModel", "method"):
        rules = [r["rule"] for r in spec[field]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, field
    # The referenced model's own rules are kept beside the field's.
    assert len(spec["method"]["x-kubernetes-validations"]) > 1
    artifact = SCHEMAS["ModelArtifact"]["properties"]
    assert artifact["spec"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert "oldSelf" in artifact["promotion"]["properties"]["stage"]["x-kubernetes-validations"][0]["rule"]


def test_nested_models_default_to_their_python_defaults() -> None:
    # Written out in full: the API server checks a default against CEL before nested defaulting.
    spec = SCHEMAS["DataDomain"]["properties"]["spec"]["properties"]
    assert spec["retention"]["default"] == Retention().to_json()
    assert spec["encryption"]["default"] == {"type": "none"}
    assert spec["retention"]["properties"]["checkpoints"]["default"] == "168h"
    assert spec["methods"]["default"] == ["lora", "qlora"]
    assert "default" not in spec["access"]["properties"]["namespaces"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND.kind)
def test_crd_envelope(kind: type[KubeResource]) -> None:
    crd = crdgen.crd(kind)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{kind.KIND.plural}.sealtune.dev"
    assert names["categories"] == ["sealtune"]
    assert names["shortNames"] == list(kind.KIND.short_names)
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[-1] == "Age"


def test_printer_columns_and_short_names() -> None:
    def columns(kind: type[KubeResource]) -> list[str]:
        return [c.name for c in kind.KIND.printer_columns if c.priority == 0]

    assert columns(FineTuneJob) == ["Phase", "Domain", "Method", "Progress%", "Age"]
    assert columns(DataDomain) == ["Classification", "Confidential", "Workload-Namespace", "Jobs", "Age"]
    assert columns(ModelArtifact) == ["Stage", "Verified", "Age"]
    assert DataDomain.KIND.scope == "Cluster"
    assert [k.KIND.short_names for k in KINDS] == [("dd",), ("ftj",), ("ma",)]


def test_printer_column_paths_exist() -> None:
    for kind in KINDS:
        for column in kind.KIND.printer_columns:
            node = SCHEMAS[kind.KIND.kind]
            for part in column.json_path.strip(".").split("."):
                node = node["properties"][part] if part != "creationTimestamp" else {}
            assert column.json_path == ".metadata.creationTimestamp" or node["type"] in (
                column.type.replace("date", "string"),
            ), column


def test_rendered_yaml_is_a_crd_with_a_header() -> None:
    for text in crdgen.render_all().values():
        assert text.startswith(crdgen.HEADER)
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


# The rewrites, on a small model of their own.


class Inner(KubeModel):
    """An inner object.

    With a second paragraph."""

    RULES = (Rule("self.a > 0", "a must be positive, set it above 0", lambda i: i.a > 0),)

    a: int = Field(1, gt=0, lt=10)
    """A number."""


class Toy(KubeModel):
    """A toy spec."""

    inner: Inner = Field(default_factory=Inner)
    """An inner object with a
    wrapped description."""

    maybe: Inner | None = Field(
        None, json_schema_extra={"x-kubernetes-validations": [{"rule": "true", "message": "m"}]}
    )
    """Maybe an inner object."""

    fixed: Literal["only"] = "only"
    """A constant."""

    labels: dict[str, str] = Field(default_factory=dict, max_length=4)
    """A string map."""

    free: dict[str, Any] = Field(default_factory=dict)
    """Anything."""


class ToyResource(KubeResource):
    """A toy kind."""

    KIND = KindInfo("Toy", "toys", ("ty",), "Namespaced", ())
    kind: Literal["Toy"] = "Toy"
    """Kind."""
    spec: Toy
    """The spec."""


def test_rewrites() -> None:
    schema = crdgen.openapi_schema(ToyResource)
    toy = schema["properties"]["spec"]
    assert toy["description"] == "The spec."  # the field's own description wins over the model's
    inner = toy["properties"]["inner"]
    assert inner["default"] == {"a": 1}
    assert inner["description"] == "An inner object with a wrapped description."
    assert inner["properties"]["a"] == {
        "type": "integer",
        "default": 1,
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 10,
        "exclusiveMaximum": True,
        "description": "A number.",
    }
    maybe = toy["properties"]["maybe"]
    assert "default" not in maybe
    assert [r["rule"] for r in maybe["x-kubernetes-validations"]] == ["self.a > 0", "true"]
    assert toy["properties"]["fixed"]["enum"] == ["only"]
    assert toy["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert toy["properties"]["labels"]["maxProperties"] == 4
    assert toy["properties"]["free"]["x-kubernetes-preserve-unknown-fields"] is True
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert schema["required"] == ["spec"]


def test_real_unions_are_refused() -> None:
    class Union(KubeModel):
        either: int | str
        """Either."""

    class UnionResource(KubeResource):
        KIND = KindInfo("U", "us", (), "Namespaced", ())
        spec: Union

    with pytest.raises(crdgen.SchemaError, match="either"):
        crdgen.openapi_schema(UnionResource)
