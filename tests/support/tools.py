"""Tools the hack/ scripts build or fetch into the cache (helm, promtool, bao), found for tests."""

from __future__ import annotations

import functools
import subprocess

from tests.support.cluster import REPO_ROOT


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
