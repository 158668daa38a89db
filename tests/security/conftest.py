"""What the security tier's tests share: the tenant developer and the chart's tenant roles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.support.kube import apply
from tests.support.tenancy import TENANT, Tenant
from tests.support.tools import render


@pytest.fixture(scope="module")
def tenant_roles(kubectl: Kubectl) -> None:
    """The chart's tenant roles, aggregated into the built-in view, edit and admin, as a helm
    install makes them."""
    roles = render("--show-only", "templates/tenant-roles.yaml")
    assert {r["kind"] for r in roles} == {"ClusterRole"}
    apply(kubectl, *roles)


@pytest.fixture
def teams(kubectl: Kubectl, team_namespace: str, tenant_roles: None) -> Iterator[tuple[str, str]]:
    """Team A (the tenant's: they hold `edit` there) and team B (another team's namespace)."""
    other = f"{team_namespace[:50]}-b"
    kubectl("create", "namespace", other)
    kubectl(
        "create", "rolebinding", "developers", "--clusterrole=edit", f"--user={TENANT}", "-n", team_namespace
    )
    yield team_namespace, other
    kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.fixture
def tenant(kubectl: Kubectl) -> Tenant:
    """kubectl as the tenant developer."""

    def run(*args: str, **kwargs: Any) -> Any:
        return kubectl("--as", TENANT, "--as-group", "system:authenticated", *args, **kwargs)

    return run
