"""Tools the hack/ scripts build or fetch into the cache (helm, promtool, bao), found for tests."""

from __future__ import annotations

import functools
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import REPO_ROOT

CHART = REPO_ROOT / "charts" / "sealtune"
SEALTUNE = Path(sys.executable).with_name("sealtune")
KUBE_VERSION = re.search(
    r"^KUBE_VERSION=(\S+)", (REPO_ROOT / "hack/lib/versions.sh").read_text(), re.MULTILINE
)[1]  # type: ignore[index]


@functools.cache
def tool(name: str) -> str:
    """The path of helm, promtool or bao, built (or fetched) first on a cold cache."""
    return subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "lib" / "binaries.sh"), "--path", name],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout.strip()


def run(*args: str, input: str | None = None, timeout: float = 300) -> str:
    result = subprocess.run(args, capture_output=True, text=True, input=input, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(args[:3])} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def render(*args: str, release: str = "t") -> list[dict[str, Any]]:
    """The chart as `helm template` renders it for the cluster's Kubernetes version."""
    out = run(
        tool("helm"),
        "template",
        release,
        str(CHART),
        "-n",
        "sealtune-system",
        "--kube-version",
        KUBE_VERSION,
        *args,
    )
    return [d for d in yaml.safe_load_all(out) if d]


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sealtune(*args: str | Path, kubeconfig: str | Path) -> tuple[int, dict[str, Any]]:
    """The `sealtune` command as a user runs it, with their kubeconfig and -o json."""
    result = subprocess.run(
        [str(SEALTUNE), *map(str, args), "--kubeconfig", str(kubeconfig), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document
