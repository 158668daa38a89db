"""The local cluster as tests see it: started by hack/cluster, reached through its own files."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_CLUSTER = REPO_ROOT / "hack" / "cluster"


class ForeignClusterError(RuntimeError):
    """The kubeconfig does not lead to a cluster that hack/cluster created."""


def hack_cluster(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HACK_CLUSTER), *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def cluster_env() -> dict[str, str]:
    """The variables `hack/cluster env` exports, with $PATH expanded against ours."""
    env: dict[str, str] = {}
    for line in hack_cluster("env").stdout.splitlines():
        if not line.startswith("export "):
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


@dataclass(frozen=True)
class LocalCluster:
    state: Path
    env: dict[str, str]

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def kubectl_path(self) -> str:
        return str(Path(self.env["PATH"].split(":")[0]) / "kubectl")

    @property
    def kubeconfig_server(self) -> str:
        for line in self.kubeconfig.read_text().splitlines():
            if line.strip().startswith("server:"):
                return line.split("server:", 1)[1].strip()
        raise ValueError(f"no server in {self.kubeconfig}")

    @property
    def vault_addr(self) -> str:
        return self.env["VAULT_ADDR"]

    @property
    def vault_root_token(self) -> str:
        init = json.loads((self.state / "openbao" / "init.json").read_text())
        return str(init["root_token"])

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(cmd[3:])} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result

    def verify_identity(self) -> None:
        """Refuses any cluster whose identity ConfigMap does not match the state directory's."""
        expected = (self.state / "cluster-id").read_text().strip()
        found = self.kubectl(
            "get",
            "configmap",
            "sealtune-local-cluster",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data.id}",
            check=False,
        ).stdout.strip()
        if found != expected:
            raise ForeignClusterError(
                f"{self.kubeconfig} does not lead to the cluster hack/cluster started in {self.state}"
            )


def ensure_cluster(extra_up_args: Sequence[str] = ()) -> tuple[LocalCluster, bool]:
    """Reuses a running cluster, or starts one. Returns it and whether this call started it."""
    env = cluster_env()
    state = Path(env["SEALTUNE_STATE"])
    started = hack_cluster("status", check=False).returncode != 0
    if started:
        result = hack_cluster("up", *extra_up_args, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"hack/cluster up failed:\n{result.stderr[-4000:]}")
    cluster = LocalCluster(state=state, env=env)
    cluster.verify_identity()
    return cluster, started
