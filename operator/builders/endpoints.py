"""Where a URL points, in the terms a NetworkPolicy peer can express."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Endpoint:
    port: int
    cidr: str | None = None
    """The address as a /32 (or /128), when the URL names an IP."""
    namespace: str | None = None
    """The namespace of an in-cluster Service the URL names (name.namespace.svc...)."""


def endpoint(url: str) -> Endpoint | None:
    """The peer of a URL, or None when its host is an external name a policy cannot hold
    (such hosts belong in the domain's egress allowlist as CIDRs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 443)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if len(labels) >= 3 and labels[2] == "svc":
            return Endpoint(port=port, namespace=labels[1])
        return None
    return Endpoint(port=port, cidr=f"{address}/{address.max_prefixlen}")
