"""The operator for integration tests: one process per test module, started after the CRDs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
from tests.support.objects import bound_claims
from tests.support.operator import OperatorProcess


@pytest.fixture(scope="module")
def operator(
    cluster: LocalCluster, kubectl: Kubectl, crds_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    kubectl("create", "namespace", "sealtune-system", check=False)
    process = OperatorProcess(cluster, Path(tmp_path_factory.mktemp("operator")) / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def team_namespace(namespace: str, kubectl: Kubectl) -> str:
    """A namespace that enforces Pod Security "restricted" and holds bound claims."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": bound_claims(namespace)}),
    )
    return namespace
