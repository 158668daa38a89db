"""Constrained scalar types of the API, each with the bounds the CRD schema repeats.

Every string is bounded (``maxLength``) so CEL rules over it stay inside the API server's
cost budget. Patterns are RE2-compatible: the API server evaluates them with Go's regexp.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# A path segment may not start with '.': that one rule keeps out '.', '..' and hidden files.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"

DNSLabel = Annotated[str, StringConstraints(pattern=rf"^{_DNS_LABEL}$", max_length=63)]
"""An RFC 1123 label: namespaces, Kueue queue names."""

DNSSubdomain = Annotated[str, StringConstraints(pattern=rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$", max_length=253)]
"""An RFC 1123 subdomain: names of most Kubernetes objects."""

LabelKey = Annotated[
    str,
    StringConstraints(
        pattern=rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        max_length=316,
    ),
]
"""A label key, optionally prefixed: ``topology.kubernetes.io/region``."""

LabelValue = Annotated[
    str, StringConstraints(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63)
]
"""A label value."""

UserGroup = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""A group name as the API server authenticates it."""

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[a-f0-9]{64}$", max_length=71)]
"""A content digest, ``sha256:`` and 64 lowercase hex digits."""

RelativePath = Annotated[str, StringConstraints(pattern=rf"^(\.|{_SEGMENT}(/{_SEGMENT})*)$", max_length=512)]
"""A path inside a volume: relative, no '..', no hidden segments; '.' is the volume's root."""

FileName = Annotated[str, StringConstraints(pattern=rf"^{_SEGMENT}$", max_length=128)]
"""A plain file name: no '/', no '..', not hidden."""

VaultPath = Annotated[str, StringConstraints(pattern=rf"^{_SEGMENT}(/{_SEGMENT})*$", max_length=512)]
"""A Vault API path below ``/v1/``, e.g. ``secret/data/team-a/hf-token``. No '*' or '+' (Vault
policies read them as globs, and the job's policy names this path) and no '..'."""

# A segment as above, in which {namespace} may stand for characters.
_PREFIX_SEGMENT = r"([A-Za-z0-9_]|\{namespace\})([A-Za-z0-9_.-]|\{namespace\})*"

VaultPathPrefix = Annotated[
    str, StringConstraints(pattern=rf"^{_PREFIX_SEGMENT}(/{_PREFIX_SEGMENT})*/?$", max_length=512)
]
"""A Vault API path or the start of one, e.g. ``secret/data/{namespace}/``; ``{namespace}`` is
replaced by a job's namespace. No globs, no '..', no leading '/'."""

WRAPPED_KEY_PATTERN = r"^vault:v[0-9]+:[A-Za-z0-9+/=]+$"

WrappedKey = Annotated[str, StringConstraints(pattern=WRAPPED_KEY_PATTERN, max_length=4096)]
"""A key as Vault transit wrapped it (``vault:v1:...``): ciphertext. Vault policies pin it, so
it holds no character a policy would read otherwise."""

URL = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$", max_length=512),
]
"""An http(s) URL."""

Quantity = Annotated[
    str,
    StringConstraints(
        pattern=r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][0-9]+)?$", max_length=32
    ),
]
"""A non-negative Kubernetes quantity: ``500m``, ``4``, ``64Gi``."""

_DURATION = re.compile(r"^(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")

Duration = Annotated[str, StringConstraints(pattern=_DURATION.pattern, min_length=2, max_length=32)]
"""A duration in hours, minutes and seconds, as Go writes them: ``720h``, ``1h30m``, ``0s``."""


def parse_duration(value: str) -> timedelta:
    """The timedelta a ``Duration`` string stands for (the operator computes deadlines with it)."""
    match = _DURATION.match(value)
    if match is None or len(value) < 2:
        raise ValueError(f"not a duration: {value!r}")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _positive_decimal(value: str) -> str:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not 0 < number <= 1:
        raise ValueError('must be a decimal number in (0, 1], e.g. "2e-4"')
    return value


Rate = Annotated[
    str,
    StringConstraints(pattern=r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([eE][-+]?[0-9]+)?$", max_length=32),
    AfterValidator(_positive_decimal),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "double(self) > 0.0 && double(self) <= 1.0",
                    "message": 'must be a decimal number in (0, 1], e.g. "2e-4"',
                }
            ]
        }
    ),
]
"""A rate in (0, 1] written as a decimal string (``"2e-4"``, ``"0.0001"``): no float rounding."""


def _utc_seconds(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


Time = Annotated[
    AwareDatetime,
    AfterValidator(_utc_seconds),
    PlainSerializer(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 32}),
]
"""A point in time, RFC 3339 in UTC with whole seconds, as Kubernetes writes ``metav1.Time``."""
