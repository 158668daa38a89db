"""How fast the operator turns N FineTuneJobs into their objects, against the floor: the same
objects created by a plain client with the same concurrency, in the same run.

    hack/bench/operator_create.py [N ...] [--repeat R] [--repeat-max N] [--without-pods]
        (default: 100 500 1000 5000, R=1; sizes above --repeat-max run once)

Needs a running local cluster (`hack/cluster up`); it grows the kwok pools for the largest N
(`hack/cluster down` resets them), and deletes its namespaces as it ends. For each N it (1)
creates, for N jobs, the exact objects the operator's builders produce, with a plain asynchronous
client at the operator's concurrency (the floor), and deletes them; (2) starts a fresh operator,
waits until it has listed what exists and gone idle, and applies N FineTuneJobs at once, across
namespaces of 50 jobs each with a domain each. One untimed pair at the smallest N warms the cluster
first. Both are timed by the same instrument, a watch on Jobs, from the first request until it has
shown all N (and, for the floor, every create has been answered; the operator makes a Job after its
companions). It reports seconds until every Indexed Job and its companions exist, seconds until
every FineTuneJob shows Running, the operator's API writes per job (from the API server's request
counters for the kinds it writes, plus its Events), its peak RSS and CPU seconds, the API server's
CPU milliseconds per job in each side's window, and checks that every FineTuneJob has exactly one
of each child, owned by it. With --repeat, each N's row gives the median over its pairs (the ratio
is the median of the pairs' ratios) and the largest peak RSS. The growth columns divide each figure
per job by the same figure at the smallest N: 1.0 or less is linear or better. The floor's own
growth is beside the operator's: on a small machine the control plane itself slows as N grows.

Much of that slowing is the control plane's work that follows the creates: the job controller
makes the pods, the scheduler binds them, kwok runs them, and the endpoint slice controller makes a
slice for each Service. At the smallest N it comes mostly after the window, at the largest it
falls inside it, on both sides. --without-pods times the same creates on a cluster whose job and
endpoint slice controllers are off, so that neither window holds that work.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sealtune.adapters.kube import KubeClient, load_credentials, resource_path  # noqa: E402
from sealtune.api.v1alpha1 import DataDomain, FineTuneJob  # noqa: E402
from sealtune.builders import desired_children  # noqa: E402
from sealtune.names import LABEL_JOB, LABEL_JOB_NAMESPACE, LABEL_JOB_UID, workload_namespace  # noqa: E402
from sealtune.settings import Settings  # noqa: E402
from tests.support.objects import domain_with_claims, finetune_job, kwok_runtime  # noqa: E402

RUN = int(time.time()) % 100_000
"""Part of every namespace's name, so runs never collide with a previous run's leftovers."""
CONCURRENCY = 32
"""The operator's default (SEALTUNE_MAX_API_CONCURRENCY); the plain client uses the same."""
JOBS_PER_NAMESPACE = 50
OPERATOR_RESOURCES = {"serviceaccounts", "networkpolicies", "configmaps", "services", "jobs"}
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
FOLLOW_UP = {"job", "endpointslice"}
"""The controllers whose work follows the creates; --without-pods wants them off."""
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


@functools.cache
def cluster_env() -> dict[str, str]:
    """The exports of `hack/cluster env`, KUBECONFIG among them (read once; not to be changed)."""
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


async def current_version(kube: KubeClient, kind: str) -> str:
    listing = await kube.request("GET", resource_path(kind), params={"limit": "1"})
    return str(listing["metadata"]["resourceVersion"])


async def watch_count(
    kube: KubeClient, kind: str, since: str, n: int, test: Callable[[dict[str, Any]], bool]
) -> float:
    """The moment n objects of a kind pass ``test``, followed through a watch from ``since`` (a
    watch costs the API server far less than the lists a poll would make it serve). The API
    server closes watchers that fall behind: then list once and watch again, as informers do."""
    passing: set[str] = set()
    while True:
        async for event in kube.watch(kind, resource_version=since):
            if event["type"] == "ERROR":
                break
            if event["type"] == "BOOKMARK":
                continue
            obj = event["object"]
            uid = obj["metadata"]["uid"]
            if event["type"] != "DELETED" and test(obj):
                passing.add(uid)
            else:
                passing.discard(uid)
            if len(passing) >= n:
                return time.monotonic()
        listing = await kube.request("GET", resource_path(kind))
        passing = {obj["metadata"]["uid"] for obj in listing["items"] if test(obj)}
        if len(passing) >= n:
            return time.monotonic()
        since = listing["metadata"]["resourceVersion"]


async def until(task: asyncio.Task[float], operator: subprocess.Popen[bytes] | None = None) -> float:
    while True:
        done, _ = await asyncio.wait({task}, timeout=1)
        if done:
            return task.result()
        if operator is not None and operator.poll() is not None:
            task.cancel()
            raise RuntimeError("the operator exited; see its log")


async def idle(operator: subprocess.Popen[bytes]) -> None:
    """Once the operator has started, listed and indexed what exists: its CPU time stands still
    for a second. Its start reads and checks its whole audit log, which grows with every job it
    ever ran: a fixed wait would let that overlap the measurement."""
    last, still = -1.0, 0
    while still < 4:
        await asyncio.sleep(0.25)
        if operator.poll() is not None:
            raise RuntimeError("the operator exited; see its log")
        cpu = process_figures(operator.pid)["cpu_s"]
        still = still + 1 if cpu - last < 0.02 else 0
        last = cpu


async def watch_jobs(kube: KubeClient, prefix: str, n: int) -> asyncio.Task[float]:
    """The instrument both sides are timed by: the moment a watch, started now, has shown N
    Jobs in the namespaces under ``prefix``."""
    since = await current_version(kube, "Job")
    return asyncio.create_task(watch_count(kube, "Job", since, n, in_namespaces(prefix)))


def in_namespaces(prefix: str, test: Callable[[dict[str, Any]], bool] = lambda _: True) -> Any:
    """Objects of the namespaces under ``prefix``; a job's children by their job's namespace (they
    live in its domain's workload namespace)."""

    def of_prefix(obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (meta.get("labels") or {}).get(LABEL_JOB_NAMESPACE, meta["namespace"]).startswith(prefix)

    return lambda obj: of_prefix(obj) and test(obj)


def api_server_cpu_s() -> float:
    """The API server's CPU seconds so far: both sides' windows are bound by it on a small
    machine, and its work per job says whether a slower window did more work or the same
    work more slowly."""
    return process_figures(api_server_pid())["cpu_s"]


@functools.cache
def api_server_pid() -> int:
    return component_pid("kube-apiserver")


def component_pid(name: str) -> int:
    return int((Path(cluster_env()["SEALTUNE_STATE"]) / f"pids/{name}.pid").read_text())


def controllers_off() -> set[str]:
    """The controllers kube-controller-manager was told not to run, read off its command line."""
    args = Path(f"/proc/{component_pid('kube-controller-manager')}/cmdline").read_text().split("\0")
    controllers = next(
        (a.partition("=")[2] or args[i + 1] for i, a in enumerate(args) if a.startswith("--controllers")), ""
    )
    return {c[1:] for c in controllers.split(",") if c.startswith("-")}


def process_figures(pid: int) -> dict[str, float]:
    """Peak resident memory (the kernel's high-water mark) and CPU seconds, user and system."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)[1])  # type: ignore[index]
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"peak_rss_mb": peak_kib / 1024, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


async def children_problems(kube: KubeClient, prefix: str, n: int) -> list[str]:
    """Every FineTuneJob has exactly one child of each kind, controlled by it: none lost, none
    duplicated."""
    jobs = [j for j in await kube.list("FineTuneJob") if j["metadata"]["namespace"].startswith(prefix)]
    problems = [] if len(jobs) == n else [f"{len(jobs)} FineTuneJobs, expected {n}"]
    uids = {j["metadata"]["uid"] for j in jobs}
    for kind in ("Job", "ConfigMap", "Service", "NetworkPolicy", "ServiceAccount"):
        owners: Counter[str] = Counter(
            obj["metadata"]["labels"].get(LABEL_JOB_UID, "")
            for obj in await kube.list(kind, None, LABEL_JOB)
            if in_namespaces(prefix)(obj)
        )
        missing = len(uids - set(owners))
        extra = sum(c - 1 for c in owners.values() if c > 1) + len(set(owners) - uids)
        if missing or extra:
            problems.append(f"{kind}: {missing} FineTuneJobs without one, {extra} duplicated or orphaned")
    return problems


def running(ftj: dict[str, Any]) -> bool:
    return (ftj.get("status") or {}).get("phase") in ("Running", "Succeeded")


async def prepare(kube: KubeClient, prefix: str, n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Namespaces, and a domain for each with its workload namespace and claims; returns (domain,
    job) manifests."""
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    namespaces = [f"{prefix}-{i}" for i in range((n + JOBS_PER_NAMESPACE - 1) // JOBS_PER_NAMESPACE)]
    for ns in namespaces:
        await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        *provisions, domain = domain_with_claims(
            ns,
            ns,
            # The kwok CPU pool only: a real node running beside it has no image for these pods.
            placement={
                "nodePools": [
                    {
                        "matchExpressions": [
                            {"key": "sealtune.dev/pool", "operator": "In", "values": ["cpu"]},
                            {"key": "type", "operator": "In", "values": ["kwok"]},
                        ]
                    }
                ]
            },
        )
        for obj in [*provisions, domain]:
            await kube.apply(obj)
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
    spaces = [workload_namespace(ns) for ns in namespaces]
    claims = [c for ns in spaces for c in await kube.list("PersistentVolumeClaim", ns)]
    while any((c.get("status") or {}).get("phase") != "Bound" for c in claims):
        await asyncio.sleep(1)
        claims = [c for ns in spaces for c in await kube.list("PersistentVolumeClaim", ns)]
    return pairs


async def plain_client(kube: KubeClient, n: int, run: str) -> dict[str, float]:
    prefix = f"bench-plain-{run}-"
    pairs = await prepare(kube, prefix.rstrip("-"), n)
    settings = Settings()
    objects = []
    for i, (domain, manifest) in enumerate(pairs):
        job = {**manifest, "metadata": {**manifest["metadata"], "uid": f"00000000-0000-0000-0000-{i:012d}"}}
        objects += desired_children(
            FineTuneJob.model_validate(job), DataDomain.model_validate(domain), settings
        )
    for obj in objects:
        obj["metadata"]["labels"]["sealtune.dev/bench"] = f"plain-{run}"
    before = await operator_writes(kube)
    jobs = await watch_jobs(kube, prefix, n)
    start, api_cpu = time.monotonic(), api_server_cpu_s()
    await gather_limited([kube.create(o) for o in objects])
    answered = time.monotonic()
    created = max(answered, await until(jobs)) - start
    api_ms_per_job = (api_server_cpu_s() - api_cpu) * 1000 / n
    writes = sum((await operator_writes(kube) - before).values()) / n
    return {"jobs_exist_s": created, "api_ms_per_job": api_ms_per_job, "writes_per_job": writes}


async def with_operator(
    kube: KubeClient, env: dict[str, str], n: int, run: str, log: Path, *, pods: bool
) -> dict[str, Any]:
    prefix = f"bench-op-{run}-"
    pairs = await prepare(kube, prefix.rstrip("-"), n)
    operator = subprocess.Popen(
        [sys.executable, "-m", "sealtune.handlers"],
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        await idle(operator)
        before = await operator_writes(kube)
        events_before = await finetunejob_events(kube)
        jobs = await watch_jobs(kube, prefix, n)
        runs = None
        if pods:
            since = await current_version(kube, "FineTuneJob")
            ran = in_namespaces(prefix, running)
            runs = asyncio.create_task(watch_count(kube, "FineTuneJob", since, n, ran))
        start, api_cpu = time.monotonic(), api_server_cpu_s()
        await gather_limited([kube.create(job) for _, job in pairs])
        jobs_exist = await until(jobs, operator) - start
        api_ms_per_job = (api_server_cpu_s() - api_cpu) * 1000 / n
        all_running: float | None = None
        if runs is not None:
            all_running = await until(runs, operator) - start
            await asyncio.sleep(2)
        else:
            await idle(operator)  # it has written the jobs' status and Events
        writes = await operator_writes(kube) - before
        events = await finetunejob_events(kube) - events_before
        figures = process_figures(operator.pid)
        problems = await children_problems(kube, prefix, n)
        return {
            "jobs_exist_s": jobs_exist,
            "api_ms_per_job": api_ms_per_job,
            "running_s": all_running,
            "writes_per_job": (sum(writes.values()) + events) / n,
            "writes": dict(writes),
            "events": events,
            **figures,
            "problems": problems,
        }
    finally:
        operator.terminate()
        operator.wait(30)


async def delete_bench_namespaces(kube: KubeClient, *, wait: bool = True) -> None:
    """Removes what earlier runs left and waits until it is gone: the operator would otherwise
    reconcile those jobs too and muddle the counts. The claims' volumes go too: nothing
    reclaims a hostPath volume, and one left behind would never bind a claim again."""

    def ours(items: list[Any]) -> list[str]:
        names = (ns["metadata"]["name"] for ns in items)
        return [n for n in names if n.startswith(("bench-", "sealtune-bench-"))]

    for name in ours(await kube.list("Namespace")):
        await kube.delete("Namespace", name)
    for name in ours(await kube.list("PersistentVolume")):
        await kube.delete("PersistentVolume", name)
    while wait and ours(await kube.list("Namespace")):
        await asyncio.sleep(2)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 500, 1000, 5000])
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="pairs of runs (plain client, operator) per N; on a small machine the API server's "
        "speed drifts from one minute to the next, and the median ratio says more than one",
    )
    parser.add_argument(
        "--repeat-max",
        type=int,
        default=None,
        metavar="N",
        help="sizes above N run one pair only (a pair at 5,000 takes over ten minutes)",
    )
    parser.add_argument(
        "--without-pods",
        action="store_true",
        help="for a cluster whose job and endpoint slice controllers are off (see "
        "SEALTUNE_KCM_CONTROLLERS in hack/lib/common.sh): both sides' windows hold the creates "
        "without the control plane's work that follows them; no pod is made, so nothing is timed "
        "to Running",
    )
    args = parser.parse_args()
    env = cluster_env()
    off = controllers_off()
    if args.without_pods and not off >= FOLLOW_UP:
        parser.error(
            "--without-pods needs the job and endpoint slice controllers off: SEALTUNE_KCM_CONTROLLERS="
            f"'*,bootstrapsigner,tokencleaner,{','.join(f'-{c}' for c in sorted(FOLLOW_UP))}' "
            "hack/cluster restart kube-controller-manager"
        )
    if not args.without_pods and "job" in off:
        parser.error(
            "the job controller is off, so no job would run: add --without-pods, or turn it on again "
            "with hack/cluster restart kube-controller-manager"
        )
    # Room for both phases' pods: 110 per node, CPU nodes in two regions.
    cpu_nodes_per_region = max(2, max(args.sizes) // 100 + 1)
    subprocess.run([str(REPO / "hack/cluster"), "pools", "4", "2", str(cpu_nodes_per_region)], check=True)
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")],
        env={**os.environ, **env},
        check=True,
    )
    kube = KubeClient(load_credentials(env["KUBECONFIG"]), "sealtune-bench", CONCURRENCY)
    rows = []

    async def pair(n: int, run: str) -> tuple[dict[str, Any], dict[str, Any]]:
        await delete_bench_namespaces(kube)
        plain = await plain_client(kube, n, run)
        # Gone before the operator starts: it would index their pods and Jobs (they carry
        # its labels), and the controllers' work for them would weigh on its measurement.
        await delete_bench_namespaces(kube)
        log = Path(f"/tmp/sealtune-bench-operator-{run}.log")
        op = await with_operator(kube, env, n, run, log, pods=not args.without_pods)
        print(json.dumps({"n": n, "run": run, "plain": plain, "operator": op}), flush=True)
        return plain, op

    try:
        # Untimed: on a freshly started cluster the first pairs are the slowest and noisiest
        # (a hundred new kwok nodes sending their first heartbeats, cold caches everywhere).
        await pair(min(args.sizes), f"{RUN}-warmup")
        for n in args.sizes:
            pairs = args.repeat if args.repeat_max is None or n <= args.repeat_max else 1
            for repeat in range(pairs):
                rows.append((n, *await pair(n, f"{RUN}-{n}-{repeat}")))
        await delete_bench_namespaces(kube, wait=False)
    finally:
        await kube.close()
    print_table(rows)


def summary(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """One N's figures over its pairs: medians, the largest peak, every problem."""
    plain, op = [p for p, _ in pairs], [o for _, o in pairs]
    ratios = sorted(o["jobs_exist_s"] / p["jobs_exist_s"] for p, o in pairs)

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(float(r[key]) for r in rows)

    return {
        "plain_s": median(plain, "jobs_exist_s"),
        "operator_s": median(op, "jobs_exist_s"),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "plain_api_ms": median(plain, "api_ms_per_job"),
        "operator_api_ms": median(op, "api_ms_per_job"),
        "running_s": median(op, "running_s") if op[0]["running_s"] is not None else None,
        "writes_per_job": median(op, "writes_per_job"),
        "peak_rss_mb": max(o["peak_rss_mb"] for o in op),
        "cpu_s": median(op, "cpu_s"),
        "problems": sorted({problem for o in op for problem in o["problems"]}),
    }


def print_table(rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> None:
    sizes = sorted({n for n, _, _ in rows})
    by_n = {n: summary([(plain, op) for m, plain, op in rows if m == n]) for n in sizes}
    header = (
        f"{'N':>6} {'pairs':>5} {'plain s':>8} {'operator s':>11} {'ratio':>6} {'running s':>10}"
        f" {'writes/job':>11} {'peak MB':>8} {'cpu s':>7} {'s/job growth':>13} {'floor s/job growth':>19}"
        f" {'running s/job growth':>21} {'MB/job growth':>14} {'cpu s/job growth':>17}"
        f" {'API ms/job plain':>17} {'API ms/job operator':>20}  children"
    )
    print("\n" + header)
    n0, first = sizes[0], by_n[sizes[0]]

    def growth(n: int, key: str) -> float | None:
        return None if first[key] is None else float((by_n[n][key] / n) / (first[key] / n0))

    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for n in sizes:
        row = by_n[n]
        print(
            f"{n:>6} {len(row['ratios']):>5} {row['plain_s']:>8.1f} {row['operator_s']:>11.1f} "
            f"{row['ratio']:>6.2f} {cell(row['running_s'], 10, 1)} {row['writes_per_job']:>11.1f} "
            f"{row['peak_rss_mb']:>8.0f} {row['cpu_s']:>7.1f} {growth(n, 'operator_s'):>13.2f} "
            f"{growth(n, 'plain_s'):>19.2f} {cell(growth(n, 'running_s'), 21, 2)} "
            f"{growth(n, 'peak_rss_mb'):>14.2f} {growth(n, 'cpu_s'):>17.2f} "
            f"{row['plain_api_ms']:>17.1f} {row['operator_api_ms']:>20.1f}  "
            f"{'; '.join(row['problems']) or 'all exactly once'}"
        )
    for n in sizes:
        ratios = by_n[n]["ratios"]
        if len(ratios) > 1:
            print(f"N={n}: ratios of its {len(ratios)} pairs: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    asyncio.run(main())
