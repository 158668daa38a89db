"""The tenant developer the security tier acts as, and how a refusal is checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TENANT = "alice@team-a.example"
Tenant = Callable[..., Any]
"""kubectl as the tenant (tests/security/conftest.py's ``tenant`` fixture)."""


def refused(result: Any, *words: str, what: str = "") -> str:
    """The stderr of a command the API server refused, which names each of ``words``."""
    assert result.returncode != 0, f"{what} not refused: {result.stdout}"
    for word in words:
        assert word in result.stderr, f"{what}: {result.stderr}"
    return str(result.stderr)
