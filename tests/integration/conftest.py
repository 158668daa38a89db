"""The operator for integration tests: one process per test module, started after the CRDs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
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
