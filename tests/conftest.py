"""Fixtures shared by every tier.

Tiers follow directories (tests/unit, tests/integration, tests/e2e, tests/trainer, tests/slow)
and get the marker of the same name, so `pytest -m unit` runs one tier alone.

The cluster: if `hack/cluster status` finds one running (for fast local iteration, start it
once with `hack/cluster up`), tests reuse it and leave it running. Otherwise the first test
that needs it starts one and the session stops it at the end. Either way, tests refuse any
kubeconfig whose cluster identity does not match the one hack/cluster recorded, so they never
touch a cluster they did not create.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sealtune.names import LABEL_WORKLOAD_OF
from tests.support.cluster import REPO_ROOT, LocalCluster, ensure_cluster, hack_cluster
from tests.support.operator import OperatorProcess, with_vault

TIERS = ("unit", "integration", "security", "e2e", "trainer", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).relative_to(REPO_ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    local, started = ensure_cluster()
    yield local
    if started:
        hack_cluster("down", check=False)


@pytest.fixture(scope="session")
def kubeconfig(cluster: LocalCluster) -> str:
    return str(cluster.kubeconfig)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return cluster.kubectl


@pytest.fixture(scope="session")
def kube_api(kubeconfig: str):  # type: ignore[no-untyped-def]
    from kubernetes import config

    api = config.new_client_from_config(config_file=kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def crds_installed(kubectl: Kubectl) -> None:
    files = [arg for path in sorted((REPO_ROOT / "crds").glob("*.yaml")) for arg in ("-f", str(path))]
    kubectl("apply", "--server-side", "--force-conflicts", *files)
    kubectl("wait", "--for=condition=Established", *files, "--timeout=60s")


@pytest.fixture(scope="session")
def vault(cluster: LocalCluster):  # type: ignore[no-untyped-def]
    import hvac

    client = hvac.Client(url=cluster.vault_addr, token=cluster.vault_root_token)
    assert client.is_authenticated()
    return client


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    kubectl("create", "namespace", name)
    yield name
    # With it go the domains the test named after it, and their workload namespaces.
    domains = json.loads(kubectl("get", "datadomains", "-o", "json", check=False).stdout or "{}")
    for domain in domains.get("items") or []:
        if domain["metadata"]["name"].startswith(name):
            kubectl("delete", "datadomain", domain["metadata"]["name"], "--wait=false", check=False)
    spaces = json.loads(kubectl("get", "namespaces", "-l", LABEL_WORKLOAD_OF, "-o", "json").stdout)["items"]
    doomed = [
        s["metadata"]["name"] for s in spaces if s["metadata"]["labels"][LABEL_WORKLOAD_OF].startswith(name)
    ]
    kubectl("delete", "namespace", name, *doomed, "--wait=false", check=False)


@pytest.fixture(scope="session")
def real_nodes(kubeconfig: str) -> dict[str, Any]:
    """Real kubelet nodes (containerd, runc) with sealtune's images imported; started once."""
    from tests.e2e.realnodes import ensure_real_nodes

    return ensure_real_nodes(kubeconfig)


@pytest.fixture
def team_namespace(namespace: str, kubectl: Kubectl) -> str:
    """A team's namespace: Pod Security "restricted" enforced. Its jobs' claims live in their
    domains' workload namespaces (tests.support.objects.domain_with_claims)."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace


@pytest.fixture(scope="module")
def vault_operator(
    cluster: LocalCluster, crds_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator logged in to OpenBao as its own ServiceAccount, shared by a module's tests."""
    hack_cluster("up")  # idempotent; (re)applies the OpenBao setup an admin would make
    process = with_vault(cluster, Path(tmp_path_factory.mktemp("vault-operator")))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def operator_with_vault(
    cluster: LocalCluster, crds_installed: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator logged in to OpenBao as its own ServiceAccount, one per test (tests that
    kill and restart it must not share it)."""
    hack_cluster("up")  # idempotent; (re)applies the OpenBao setup an admin would make
    process = with_vault(cluster, tmp_path)
    process.start()
    yield process
    process.stop()
