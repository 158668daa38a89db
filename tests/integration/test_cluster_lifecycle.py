"""`hack/cluster up` then `down` on a second, isolated cluster leaves nothing of it behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.cluster import HACK_CLUSTER

# Another state directory, address and ports, so this runs beside the session's cluster.
ISOLATED = {
    "SEALTUNE_STATE": "/tmp/sealtune-lifecycle-test",
    "SEALTUNE_API_IP": "10.200.0.9",
    "SEALTUNE_API_PORT": "16443",
    "SEALTUNE_ETCD_PORT": "12379",
    "SEALTUNE_BAO_PORT": "18200",
    "SEALTUNE_KCM_PORT": "11257",
    "SEALTUNE_SCHEDULER_PORT": "11259",
    "SEALTUNE_KUEUE_WEBHOOK_PORT": "19444",
    "SEALTUNE_KUEUE_METRICS_PORT": "19445",
    "SEALTUNE_KUEUE_HEALTH_PORT": "19446",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ISOLATED}
    return subprocess.run(
        [str(HACK_CLUSTER), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def our_processes() -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if ISOLATED["SEALTUNE_STATE"] + "/" in line]


def test_up_then_down_leaves_no_process_address_or_state() -> None:
    try:
        up = run("up")
        assert up.returncode == 0, up.stderr
        assert run("status").returncode == 0
        assert len(our_processes()) >= 5
        kubeconfig = Path(ISOLATED["SEALTUNE_STATE"]) / "kubeconfig"
        kubectl = Path(run("env").stdout.split("PATH=")[1].split(":")[0]) / "kubectl"
        nodes = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "node/kwok-cc-gpu-0" in nodes
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert our_processes() == []
    addresses = subprocess.run(
        ["ip", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    ).stdout
    assert ISOLATED["SEALTUNE_API_IP"] + "/" not in addresses
    assert not Path(ISOLATED["SEALTUNE_STATE"]).exists()
    assert run("status").returncode != 0
