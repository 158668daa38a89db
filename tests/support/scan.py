"""The secret scan: given known secret values, search everywhere they must never be. Every
object the API server serves (all kinds, all namespaces, Secrets and ConfigMaps included),
every Event, raw etcd (so encrypted-at-rest or not is visible), and log files."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.support.cluster import LocalCluster


def encodings(value: str) -> list[bytes]:
    """The forms a leaked value may take: itself, and base64 (how Secrets and transit hold it)."""
    raw = value.encode()
    return [raw, base64.b64encode(raw)]


def _hits(blob: bytes, values: Sequence[str]) -> list[str]:
    return [value for value in values if any(form in blob for form in encodings(value))]


def api_objects(cluster: LocalCluster) -> bytes:
    kinds = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    listed = cluster.kubectl("get", ",".join(kinds), "--all-namespaces", "-o", "json", "--ignore-not-found")
    return listed.stdout.encode()


def etcd_raw(cluster: LocalCluster) -> bytes:
    """Every value under /registry, as stored."""
    result = subprocess.run(
        ["etcdctl", "get", "/registry", "--prefix"],
        capture_output=True,
        check=True,
        timeout=120,
        env={**os.environ, **cluster.env},
    )
    return result.stdout


def find_secrets(cluster: LocalCluster, values: Sequence[str], files: Iterable[Path] = ()) -> list[str]:
    """Where any of ``values`` appears: a list of "place: value" findings (empty is clean)."""
    findings = [f"api server: {v}" for v in _hits(api_objects(cluster), values)]
    findings += [f"etcd: {v}" for v in _hits(etcd_raw(cluster), values)]
    for path in files:
        if path.is_file():
            findings += [f"{path}: {v}" for v in _hits(path.read_bytes(), values)]
    return findings
