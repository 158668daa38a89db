"""How fast queued work starts once Kueue frees quota: N queued FineTuneJobs against N plain
queued batch Jobs (the floor: Kueue and the Job controller alone), in the same run.

    hack/bench/kueue_admission.py [N] [--gpus-per-job G]      (default N=100, G=1)

Needs a running local cluster (`hack/cluster up`, which runs Kueue); it grows the kwok GPU pool
to fit N jobs (`hack/cluster down` resets it) and deletes what it made as it ends. Each side gets
a ClusterQueue with no GPU quota and a LocalQueue, its N jobs are submitted and wait (every
Workload pending), then the ClusterQueue's quota is raised to fit all N at once: the clock runs
from that patch until every job shows Running. For FineTuneJobs that is status.phase Running,
which the operator writes once it sees the workers run; for plain Jobs, status.ready of every Job.
Both are read by the same instrument, a poll of the list every half second. Prints both times and
their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sealtune.names import workload_namespace  # noqa: E402
from tests.support.cluster import LocalCluster, ensure_cluster  # noqa: E402
from tests.support.objects import domain_with_claims, finetune_job, kwok_runtime  # noqa: E402
from tests.support.operator import OperatorProcess  # noqa: E402

KUEUE = "kueue.x-k8s.io/v1beta2"
RUN = int(time.time()) % 100_000
GPUS_PER_NODE = 8
POLL_SECONDS = 0.5
TIMEOUT_SECONDS = 900


def kubectl(cluster: LocalCluster, *args: str, input: str | None = None) -> str:
    return cluster.kubectl(*args, input=input).stdout


def apply(cluster: LocalCluster, *objects: dict[str, Any]) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(items))


def queues(name: str, namespace: str) -> list[dict[str, Any]]:
    """A ClusterQueue with no GPU quota yet, and its LocalQueue in ``namespace``."""
    resources = [
        {"name": "cpu", "nominalQuota": "1000"},
        {"name": "memory", "nominalQuota": "4000Gi"},
        {"name": "nvidia.com/gpu", "nominalQuota": 0},
    ]
    return [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "gpu"},
         "spec": {"nodeLabels": {"sealtune.dev/pool": "gpu"}}},
        {"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name},
         "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                  "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                                      "flavors": [{"name": "gpu", "resources": resources}]}]}},
        {"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
         "spec": {"clusterQueue": name}},
    ]  # fmt: skip


def free_quota(cluster: LocalCluster, name: str, gpus: int) -> float:
    patch = [
        {"op": "replace", "path": "/spec/resourceGroups/0/flavors/0/resources/2/nominalQuota", "value": gpus}
    ]
    start = time.monotonic()
    kubectl(cluster, "patch", "clusterqueue", name, "--type=json", "-p", json.dumps(patch))
    return start


def wait_all(
    cluster: LocalCluster, what: str, namespace: str, n: int, done: Callable[[dict[str, Any]], bool]
) -> float:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        items = json.loads(kubectl(cluster, "get", what, "-n", namespace, "-o", "json"))["items"]
        if len(items) >= n and all(done(i) for i in items):
            return time.monotonic()
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{what} in {namespace}: not all {n} done in {TIMEOUT_SECONDS} s")


def pending_workloads(cluster: LocalCluster, namespace: str, n: int) -> None:
    """Every job has a Workload that waits for quota."""

    def waits(w: dict[str, Any]) -> bool:
        return any(
            c["type"] == "QuotaReserved" and c["status"] == "False"
            for c in w.get("status", {}).get("conditions", [])
        )

    wait_all(cluster, "workloads.kueue.x-k8s.io", namespace, n, waits)


def ftj_running(job: dict[str, Any]) -> bool:
    return bool(job.get("status", {}).get("phase") == "Running")


def job_running(job: dict[str, Any]) -> bool:
    return bool(job.get("status", {}).get("ready", 0) >= 1)


def timed(
    cluster: LocalCluster,
    jobs: list[dict[str, Any]],
    *,
    queue: str,
    queued_in: str,
    gpus: int,
    listing: tuple[str, str],
    running: Callable[[dict[str, Any]], bool],
) -> float:
    """Submits the jobs, waits until each one's Workload waits for quota in ``queued_in``, then
    gives ``queue`` the GPUs: seconds until every job of ``listing`` (kind, namespace) runs."""
    apply(cluster, *jobs)
    pending_workloads(cluster, queued_in, len(jobs))
    start = free_quota(cluster, queue, gpus)
    return wait_all(cluster, *listing, len(jobs), running) - start


def sealtune_side(cluster: LocalCluster, n: int, gpus: int, scratch: Path) -> float:
    team, domain, name = f"bench-q-{RUN}", f"bench-q-{RUN}", f"bench-ftj-{RUN}"
    wns = workload_namespace(domain)
    kubectl(cluster, "create", "namespace", team)
    operator = OperatorProcess(cluster, scratch / "operator.log", namespaces=team)
    operator.start()
    try:
        placement = {"requireQueue": True, "queues": [{"name": name, "namespaces": [team]}]}
        apply(cluster, *domain_with_claims(domain, team, placement=placement))
        apply(cluster, *queues(name, wns))
        resources = {"workers": 1, "gpusPerWorker": gpus, "cpu": "1", "memory": "1Gi"}
        jobs = [
            finetune_job(
                f"j{i}", team, domain, resources=resources, scheduling={"queueName": name},
                podMetadata=kwok_runtime(600),
            )
            for i in range(n)
        ]  # fmt: skip
        return timed(
            cluster, jobs, queue=name, queued_in=wns, gpus=n * gpus, listing=("finetunejobs", team),
            running=ftj_running,
        )  # fmt: skip
    finally:
        # While the operator runs: their finalizers have it remove what they made.
        kubectl(cluster, "delete", "finetunejobs", "--all", "-n", team, "--timeout=300s")
        operator.stop()
        kubectl(cluster, "delete", "namespace", team, wns, "--wait=false")
        kubectl(cluster, "delete", "datadomain", domain, "--wait=false")
        kubectl(cluster, "delete", "clusterqueue", name, "--wait=false")


def plain_side(cluster: LocalCluster, n: int, gpus: int) -> float:
    namespace = name = f"bench-plain-{RUN}"
    kubectl(cluster, "create", "namespace", namespace)
    try:
        apply(cluster, *queues(name, namespace))
        template = {
            "metadata": {"annotations": kwok_runtime(600)["annotations"]},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"sealtune.dev/pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "c", "image": "busybox", "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)},
                    "limits": {"nvidia.com/gpu": str(gpus)}}}],
            },
        }  # fmt: skip
        labels = {"kueue.x-k8s.io/queue-name": name}
        jobs = [
            {"apiVersion": "batch/v1", "kind": "Job",
             "metadata": {"name": f"j{i}", "namespace": namespace, "labels": labels},
             "spec": {"suspend": True, "backoffLimit": 0, "template": template}}
            for i in range(n)
        ]  # fmt: skip
        return timed(
            cluster, jobs, queue=name, queued_in=namespace, gpus=n * gpus,
            listing=("jobs.batch", namespace), running=job_running,
        )  # fmt: skip
    finally:
        kubectl(cluster, "delete", "namespace", namespace, "--wait=false")
        kubectl(cluster, "delete", "clusterqueue", name, "--wait=false")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("n", nargs="?", type=int, default=100)
    parser.add_argument("--gpus-per-job", type=int, default=1)
    args = parser.parse_args()
    cluster, _ = ensure_cluster()
    nodes = math.ceil(args.n * args.gpus_per_job / GPUS_PER_NODE) + 1
    subprocess.run([str(REPO / "hack/cluster"), "pools", str(nodes), "2", "2"], check=True)
    plain = plain_side(cluster, args.n, args.gpus_per_job)
    with tempfile.TemporaryDirectory(prefix="sealtune-bench-") as scratch:
        ours = sealtune_side(cluster, args.n, args.gpus_per_job, Path(scratch))
    print(f"{args.n} queued jobs, {args.gpus_per_job} GPU each: from quota freed to all Running")
    print(f"  plain batch Jobs (Kueue + Job controller): {plain:7.1f} s")
    print(f"  FineTuneJobs (sealtune on top):            {ours:7.1f} s")
    print(f"  ratio sealtune / plain:                    {ours / plain:7.2f}")


if __name__ == "__main__":
    main()
