"""Kubernetes-shaped building blocks shared by the kinds: references, selectors,
tolerations and conditions. Each mirrors its core counterpart, cut to what sealtune uses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import KubeModel, Rule, list_map
from .scalars import DNSSubdomain, LabelKey, LabelValue, RelativePath, Time


class LocalObjectReference(KubeModel):
    """A reference to an object by name (in the same namespace, or cluster-scoped)."""

    name: DNSSubdomain
    """Name of the referenced object. Required."""


class UIDReference(KubeModel):
    """A reference to one object incarnation: its name and the uid it had."""

    name: DNSSubdomain
    """Name of the referenced object. Required."""

    uid: str = Field(max_length=64)
    """metadata.uid of the referenced object, which changes if it is deleted and recreated. Required."""


class VolumePath(KubeModel):
    """A path inside a PersistentVolumeClaim."""

    claim_name: DNSSubdomain
    """Name of the PersistentVolumeClaim. Required."""

    path: RelativePath = "."
    """Path inside the claim: relative, without '..' or hidden segments. Optional; defaults to
    '.', the claim's root."""


class LabelSelectorRequirement(KubeModel):
    """One requirement of a label selector."""

    key: LabelKey
    """The label key the requirement applies to. Required."""

    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values. Required."""

    values: list[LabelValue] = Field(default_factory=list, max_length=64)
    """The values for In and NotIn; empty for Exists and DoesNotExist. Optional."""


class LabelSelector(KubeModel):
    """A label query over objects, as in metav1.LabelSelector; an empty selector matches all."""

    # Keys stay plain strings: a structural schema cannot constrain map keys, and a key no
    # object carries just matches nothing.
    match_labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=32)
    """Labels an object must carry, all of them. Optional."""

    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements an object must meet, all of them. Optional."""


class NodeSelectorRequirement(KubeModel):
    """One requirement on node labels."""

    key: LabelKey
    """The node label key. Required."""

    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the key relates to the values. Required."""

    values: list[LabelValue] = Field(default_factory=list, max_length=64)
    """Values for In and NotIn; a single integer for Gt and Lt; empty otherwise. Optional."""


class NodeSelectorTerm(KubeModel):
    """Nodes matching all of the term's requirements (as in core/v1 NodeSelectorTerm)."""

    match_expressions: list[NodeSelectorRequirement] = Field(min_length=1, max_length=16)
    """Requirements on node labels, all of which must hold. Required, at least one."""


class Toleration(KubeModel):
    """A toleration added to the job's pods (as in core/v1 Toleration)."""

    RULES = (
        Rule(
            "has(self.key) || self.operator == 'Exists'",
            "key is required unless operator is Exists",
            lambda t: t.key is not None or t.operator == "Exists",
        ),
        Rule(
            "self.operator != 'Exists' || !has(self.value)",
            "value must be empty when operator is Exists",
            lambda t: t.operator != "Exists" or t.value is None,
        ),
    )

    key: LabelKey | None = None
    """The taint key tolerated. Optional; empty with operator Exists tolerates every taint."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal matches the taint's value, Exists any value. Optional; defaults to Equal."""

    value: LabelValue | None = None
    """The taint value matched when operator is Equal. Optional."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect tolerated. Optional; unset tolerates every effect."""

    toleration_seconds: int | None = Field(None, ge=0, le=31_536_000)
    """How long a NoExecute taint is tolerated before eviction, in seconds. Optional; unset
    tolerates it forever."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """One aspect of an object's state, as in metav1.Condition; reasons are CamelCase constants
    from ``sealtune.api.v1alpha1.conditions``."""

    type: str = Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
    )
    """Type of the condition, CamelCase, e.g. Succeeded. Required."""

    status: ConditionStatus
    """Status of the condition: True, False or Unknown. Required."""

    reason: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=1024)
    """Why the condition last changed: a CamelCase word programs can match on. Required."""

    message: str = Field("", max_length=32_768)
    """What happened, for people. Optional."""

    observed_generation: int | None = Field(None, ge=0)
    """The metadata.generation the condition was computed from. Optional."""

    last_transition_time: Time
    """When the status last changed (not when the reason or message did). Required."""


def conditions_field(known: str) -> Any:
    """The ``conditions`` of a status, keyed by type as in every Kubernetes status."""
    return Field(
        default_factory=list,
        max_length=16,
        description=f"The latest observations of the object's state, one per type. {known}",
        json_schema_extra=list_map("type"),
    )
