"""The base every sealtune API model derives from, and the CRD facts of each kind.

Models only describe; turning them into CRDs is ``sealtune.crdgen``'s job, so this module
holds the few Kubernetes extensions a model must carry itself (CEL rules, list types).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "sealtune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes writes acronyms in one case ("podIP", "maxGPUs"), which pydantic's to_camel
# does not know; the few this API uses are spelled out here.
_ACRONYMS = {"auc": "AUC", "cidr": "CIDR", "gpus": "GPUs", "id": "ID", "ttl": "TTL", "uid": "UID"}


def camel(name: str) -> str:
    """The JSON name of a Python field: ``max_gpus_per_worker`` -> ``maxGPUsPerWorker``."""
    first, *rest = name.split("_")
    return first + "".join(_ACRONYMS.get(word, word.capitalize()) for word in rest)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, written twice side by side: as CEL for the API server and as a
    Python check for the operator, so the two are reviewed together and cannot drift apart
    unnoticed (the integration tests feed both the same objects)."""

    cel: str
    message: str
    """Names the field and the fix; the API server prefixes it with the object's path."""
    check: Callable[[Any], bool]


class KubeModel(BaseModel):
    """A part of a sealtune object: camelCase on the wire, snake_case in Python.

    Unknown fields are refused: the API server prunes them before the operator reads an
    object, and the CRDs ship with the operator, so anything unknown here is a bug.
    """

    model_config = ConfigDict(
        alias_generator=camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    RULES: ClassVar[tuple[Rule, ...]] = ()
    """Cross-field rules of this model, checked on validation and emitted as CEL."""

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        failed = [r.message for r in type(self).RULES if not r.check(self)]
        if failed:
            raise ValueError("; ".join(failed))
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.RULES:
            handler.resolve_ref_schema(schema)["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message} for r in cls.RULES
            ]
        return schema

    def to_json(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def immutable(path: str) -> dict[str, Any]:
    """``json_schema_extra`` for a field that may not change after creation. Transition rules
    have no Python side: only the API server sees the old object."""
    message = f"{path} is immutable: delete the object and create it again to change it"
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": message}]}


def list_map(*keys: str) -> dict[str, Any]:
    """A list whose items are identified by ``keys``, so server-side apply merges by them."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


@dataclass(frozen=True)
class PrinterColumn:
    """A column ``kubectl get`` prints for a kind."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    description: str
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    """What a CRD says about a kind beyond its schema."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    printer_columns: tuple[PrinterColumn, ...]
    selectable_fields: tuple[str, ...] = ()
    """JSON paths usable in field selectors, e.g. to list the jobs of one domain."""
    categories: tuple[str, ...] = ("sealtune",)


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation.")


class KubeResource(KubeModel):
    """A whole sealtune object. ``metadata`` stays a plain dict: the operator reads it through
    kopf, and its schema is the API server's, not ours."""

    KIND: ClassVar[KindInfo]

    api_version: str = API_VERSION
    """APIVersion of this representation of the object."""

    kind: str
    """Kind of the object."""

    metadata: dict[str, Any]
    """Standard object metadata."""
