"""Local PersistentVolumes on the real nodes, made by hack/lib/volumes.sh (the demo uses the same
script): a host directory, a PV under the StorageClass sealtune-local with node affinity, pre-bound
to a claim, and the claim."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.cluster import REPO_ROOT

VOLUMES_SH = REPO_ROOT / "hack" / "lib" / "volumes.sh"


def _volumes_sh(kubeconfig: str, *args: str) -> str:
    env = {**os.environ, "SEALTUNE_STATE": str(Path(kubeconfig).resolve().parent)}
    result = subprocess.run(
        ["bash", str(VOLUMES_SH), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/lib/volumes.sh {args[0]} failed:\n{result.stderr}")
    return result.stdout.strip()


def make_volume(kubeconfig: str, name: str, namespace: str, claim: str, nodes: Sequence[str]) -> Path:
    """The volume ``name`` on ``nodes`` and its claim ``namespace/claim``; returns its directory."""
    return Path(_volumes_sh(kubeconfig, "make", name, namespace, claim, ",".join(nodes)))


def own(kubeconfig: str, name: str) -> None:
    """Hands what the test (root) wrote into the volume to the pods' uid."""
    _volumes_sh(kubeconfig, "own", name)


def remove(kubeconfig: str, *names: str) -> None:
    _volumes_sh(kubeconfig, "remove", *names)
