"""How fast the operator turns N FineTuneJobs into their objects, against the floor: the same
objects created by a plain client with the same concurrency, in the same run.

    hack/bench/operator_create.py [N ...]        (default: 100 500)

Needs a running local cluster (`hack/cluster up`). For each N it (1) creates, for N jobs, the
exact objects the operator's builders produce, with a plain asynchronous client; (2) starts the
operator and applies N FineTuneJobs at once. It reports seconds until every Indexed Job exists,
seconds until every FineTuneJob shows Running, the operator's API writes per job (from the API
server's request counters for the kinds it writes, plus its Events), and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sealtune.adapters.kube import KubeClient, load_credentials  # noqa: E402
from sealtune.api.v1alpha1 import DataDomain, FineTuneJob  # noqa: E402
from sealtune.builders import desired_children  # noqa: E402
from sealtune.settings import Settings  # noqa: E402
from tests.support.objects import bound_claims, data_domain, finetune_job, kwok_runtime  # noqa: E402

RUN = int(time.time()) % 100_000
"""Part of every namespace's name, so runs never collide with a previous run's leftovers."""
CONCURRENCY = 32
JOBS_PER_NAMESPACE = 50
OPERATOR_RESOURCES = {"serviceaccounts", "networkpolicies", "configmaps", "services", "jobs"}
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def cluster_env() -> dict[str, str]:
    out = subprocess.run(
        [str(REPO / "hack/cluster"), "env"], capture_output=True, text=True, check=True
    ).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[7:].partition("=")
            env[k] = v.replace("$PATH", os.environ["PATH"])
    return env


async def operator_writes(kube: KubeClient) -> Counter[str]:
    """Write requests the API server counted, for the resources the operator writes."""
    text = await kube.get_text("/metrics")
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        resource, sub = labels.get("resource"), labels.get("subresource", "")
        if (resource in OPERATOR_RESOURCES and not sub) or (resource == "finetunejobs" and sub == "status"):
            counts[f"{resource}/{sub}" if sub else resource] += int(float(match["value"]))
    return counts


async def finetunejob_events(kube: KubeClient) -> int:
    """Events about FineTuneJobs: the operator's (the controllers post their own about pods)."""
    return sum(1 for e in await kube.list("Event") if e["involvedObject"].get("kind") == "FineTuneJob")


async def gather_limited(coros: list[Any]) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(coro: Any) -> None:
        async with limit:
            await coro

    await asyncio.gather(*(one(c) for c in coros))


async def wait_count(  # noqa: PLR0917
    kube: KubeClient,
    kind: str,
    selector: str,
    n: int,
    test: Any = None,
    alive: subprocess.Popen[bytes] | None = None,
) -> float:
    start = time.monotonic()
    while True:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError("the operator exited; see its log")
        items = await kube.list(kind, None, selector)
        if sum(1 for i in items if test is None or test(i)) >= n:
            return time.monotonic() - start
        await asyncio.sleep(0.25)


def running(ftj: dict[str, Any]) -> bool:
    return (ftj.get("status") or {}).get("phase") in ("Running", "Succeeded")


async def prepare(kube: KubeClient, prefix: str, n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Namespaces, claims and a domain for each; returns (domain, job) manifests."""
    pairs = []
    namespaces = [f"{prefix}-{i}" for i in range((n + JOBS_PER_NAMESPACE - 1) // JOBS_PER_NAMESPACE)]
    for ns in namespaces:
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for obj in bound_claims(ns):
            await kube.apply(obj)
        domain = data_domain(
            ns,
            ns,
            placement={
                "nodePools": [
                    {"matchExpressions": [{"key": "sealtune.dev/pool", "operator": "In", "values": ["cpu"]}]}
                ]
            },
        )
        await kube.apply(domain)
        for j in range(JOBS_PER_NAMESPACE):
            if len(pairs) == n:
                break
            job = finetune_job(
                f"job-{j}",
                ns,
                ns,
                resources={"workers": 1, "gpusPerWorker": 0, "cpu": "10m", "memory": "16Mi"},
                podMetadata=kwok_runtime(600),
            )
            pairs.append((domain, job))
    # The PV controller binds claims on its own schedule; wait once for all of them.
    claims = [c for ns in namespaces for c in await kube.list("PersistentVolumeClaim", ns)]
    while any((c.get("status") or {}).get("phase") != "Bound" for c in claims):
        await asyncio.sleep(1)
        claims = [c for ns in namespaces for c in await kube.list("PersistentVolumeClaim", ns)]
    return pairs


async def plain_client(kube: KubeClient, n: int) -> dict[str, float]:
    pairs = await prepare(kube, f"bench-plain-{RUN}-{n}", n)
    settings = Settings()
    objects = []
    for i, (domain, manifest) in enumerate(pairs):
        job = {**manifest, "metadata": {**manifest["metadata"], "uid": f"00000000-0000-0000-0000-{i:012d}"}}
        objects += desired_children(
            FineTuneJob.model_validate(job), DataDomain.model_validate(domain), settings
        )
    for obj in objects:
        # The owner does not exist: the garbage collector would delete orphans at once.
        obj["metadata"].pop("ownerReferences")
        obj["metadata"]["labels"]["sealtune.dev/bench"] = f"plain-{RUN}-{n}"
    before = await operator_writes(kube)
    start = time.monotonic()
    await gather_limited([kube.create(o) for o in objects])
    created = time.monotonic() - start
    await wait_count(kube, "Job", f"sealtune.dev/bench=plain-{RUN}-{n}", n)
    return {
        "jobs_exist_s": created,
        "writes_per_job": sum((await operator_writes(kube) - before).values()) / n,
    }


async def with_operator(kube: KubeClient, env: dict[str, str], n: int, log: Path) -> dict[str, Any]:
    pairs = await prepare(kube, f"bench-op-{RUN}-{n}", n)
    operator = subprocess.Popen(
        [sys.executable, "-m", "sealtune.handlers"],
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        await asyncio.sleep(5)  # let it list and index what exists
        before = await operator_writes(kube)
        events_before = await finetunejob_events(kube)
        start = time.monotonic()
        await gather_limited([kube.create(job) for _, job in pairs])
        domains = ",".join(sorted({d["metadata"]["name"] for d, _ in pairs}))
        await wait_count(kube, "Job", f"sealtune.dev/domain in ({domains})", n, alive=operator)
        jobs_exist = time.monotonic() - start
        await wait_count(kube, "FineTuneJob", "", n, running, alive=operator)
        all_running = time.monotonic() - start
        await asyncio.sleep(2)
        writes = await operator_writes(kube) - before
        events = await finetunejob_events(kube) - events_before
        return {
            "jobs_exist_s": jobs_exist,
            "running_s": all_running,
            "writes_per_job": (sum(writes.values()) + events) / n,
            "writes": dict(writes),
            "events": events,
        }
    finally:
        operator.terminate()
        operator.wait(30)


async def delete_bench_namespaces(kube: KubeClient) -> None:
    """Removes what earlier runs left and waits until it is gone: the operator would otherwise
    reconcile those jobs too and muddle the counts."""

    def ours(items: list[Any]) -> list[str]:
        return [ns["metadata"]["name"] for ns in items if ns["metadata"]["name"].startswith("bench-")]

    for name in ours(await kube.list("Namespace")):
        await kube.delete("Namespace", name)
    while ours(await kube.list("Namespace")):
        await asyncio.sleep(2)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 500])
    args = parser.parse_args()
    env = cluster_env()
    env["KUBECONFIG"] = f"{env['SEALTUNE_STATE']}/kubeconfig"
    # Room for both phases' pods: 110 per node, CPU nodes in two regions.
    cpu_nodes_per_region = max(2, max(args.sizes) // 100 + 1)
    subprocess.run([str(REPO / "hack/cluster"), "pools", "4", "2", str(cpu_nodes_per_region)], check=True)
    kube = KubeClient(load_credentials(env["KUBECONFIG"]), "sealtune-bench", CONCURRENCY)
    rows = []
    try:
        for n in args.sizes:
            await delete_bench_namespaces(kube)
            plain = await plain_client(kube, n)
            op = await with_operator(kube, env, n, Path(f"/tmp/sealtune-bench-operator-{n}.log"))
            rows.append((n, plain, op))
            print(json.dumps({"n": n, "plain": plain, "operator": op}), flush=True)
        await delete_bench_namespaces(kube)
    finally:
        await kube.close()
    print(f"\n{'N':>6} {'plain s':>9} {'operator s':>11} {'ratio':>6} {'running s':>10} {'writes/job':>11}")
    for n, plain, op in rows:
        print(
            f"{n:>6} {plain['jobs_exist_s']:>9.1f} {op['jobs_exist_s']:>11.1f} "
            f"{op['jobs_exist_s'] / plain['jobs_exist_s']:>6.2f} {op['running_s']:>10.1f} "
            f"{op['writes_per_job']:>11.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
