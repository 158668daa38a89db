"""Real kubelet nodes for end-to-end tests: brought up by hack/lib/nodes.sh, described by it.

`ensure_real_nodes(kubeconfig)` is the body of the session fixture `real_nodes`: it runs
`hack/lib/nodes.sh up N` against the cluster that owns `kubeconfig` (a no-op when the nodes
already run; a cold first run also builds the images, which takes minutes) and returns what
`hack/lib/nodes.sh info` reports, plus shortcuts:

    {"nodes": [{"name", "ip", "podCIDR", "bridge", "confidential", "containerdSocket",
                "kubeletRoot"}, ...],
     "names": [...], "confidential": "real-cc-gpu-0", "plain": ["real-cpu-0", ...],
     "images": {"pause": ref, "operator": ref, "trainer": ref},
     "runtimeHandler": "kata-qemu-nvidia-gpu-tdx", "clusterDNS": "10.96.0.10",
     "nodesRoot": ..., "nodesRun": ..., "startSeconds": float}

N is $SEALTUNE_E2E_REAL_NODES, default 2: the confidential node and one plain node, so that
the pods of an Indexed Job can sit on two nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NODES_SH = REPO_ROOT / "hack" / "lib" / "nodes.sh"
DEFAULT_NODES = 2


def nodes_env(kubeconfig: str) -> dict[str, str]:
    """The environment hack/lib/nodes.sh needs: the cluster's state directory."""
    return {**os.environ, "SEALTUNE_STATE": str(Path(kubeconfig).resolve().parent)}


def nodes_sh(kubeconfig: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(NODES_SH), *args],
        env=nodes_env(kubeconfig),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def node_count() -> int:
    return int(os.environ.get("SEALTUNE_E2E_REAL_NODES", DEFAULT_NODES))


def bring_up(kubeconfig: str, count: int | None = None) -> float:
    """Runs `nodes.sh up`; returns its wall time. A cold run builds images (up to an hour)."""
    start = time.monotonic()
    result = nodes_sh(kubeconfig, "up", str(count or node_count()), timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"hack/lib/nodes.sh up failed:\n{result.stderr[-6000:]}")
    return time.monotonic() - start


def describe(kubeconfig: str) -> dict[str, Any]:
    result = nodes_sh(kubeconfig, "info")
    if result.returncode != 0:
        raise RuntimeError(f"hack/lib/nodes.sh info failed:\n{result.stderr}")
    info: dict[str, Any] = json.loads(result.stdout)
    nodes = info["nodes"]
    info["names"] = [n["name"] for n in nodes]
    info["confidential"] = next(n["name"] for n in nodes if n["confidential"])
    info["plain"] = [n["name"] for n in nodes if not n["confidential"]]
    return info


def ensure_real_nodes(kubeconfig: str) -> dict[str, Any]:
    seconds = bring_up(kubeconfig)
    info = describe(kubeconfig)
    info["startSeconds"] = seconds
    return info
