"""Fault injection: many FineTuneJob lifecycles on the kwok pools while the operator is
SIGKILLed at random (seeded) points, kube-apiserver and etcd restart, and OpenBao is away for a
minute; afterwards every promise is checked from the outside (kubectl, hvac, the audit file).

Replay a failing run with the seed it prints: SEALTUNE_FAULT_SEED=<seed> pytest tests/slow/test_faults.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster, hack_cluster
from tests.support.kube import apply, get, of_job, wait_for
from tests.support.objects import finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess
from tests.support.scan import find_secrets
from tests.support.vaultdata import transit_domain, write_secret

SEED = int(os.environ.get("SEALTUNE_FAULT_SEED", str(random.SystemRandom().randrange(1 << 32))))
LIFECYCLES = int(os.environ.get("SEALTUNE_FAULT_LIFECYCLES", "100"))
MIN_KILLS = int(os.environ.get("SEALTUNE_FAULT_KILLS", "50"))
CHILD_KINDS = ("jobs.batch", "services", "networkpolicies", "serviceaccounts", "configmaps")
RETENTION = {"trainingCopies": "10s", "checkpoints": "20s"}


def seeded(request: pytest.FixtureRequest) -> random.Random:
    print(f"\n{request.node.name}: SEALTUNE_FAULT_SEED={SEED}")  # printed so a failure can be replayed
    return random.Random(SEED)


def jobs_in(kubectl: Kubectl, ns: str) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["name"]: j for j in get(kubectl, "ftj", "-n", ns)["items"]}


def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def stage(jobs: dict[str, dict[str, Any]]) -> str:
    """Where the operator's work stood when it was killed, from the jobs' state."""
    statuses = [j.get("status") or {} for j in jobs.values()]
    if any(not condition(j, "SecretsReady") for j in jobs.values()):
        return "admission and Vault grant"
    if any(s.get("phase") == "Pending" for s in statuses):
        return "children and placement"
    if any(s.get("phase") == "Running" for s in statuses):
        return "status of running jobs"
    if any(any("deletedAt" not in d for d in s.get("deletions") or [{}]) for s in statuses):
        return "publication and retention"
    return "idle"


class History:
    """Every status seen per job, to find anything lost or rolled back."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.violations: list[str] = []

    def observe(self, jobs: dict[str, dict[str, Any]]) -> None:
        for name, job in jobs.items():
            now = job.get("status") or {}
            before = self.seen.get(name)
            if before is not None:
                self.violations += rollbacks(name, before, now)
            self.seen[name] = now


def rollbacks(name: str, before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    found = []
    order = {"Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}
    if order.get(now.get("phase", ""), 0) < order.get(before.get("phase", ""), 0):
        found.append(f"{name}: phase went back from {before.get('phase')} to {now.get('phase')}")
    for stamp, value in (before.get("timestamps") or {}).items():
        if (now.get("timestamps") or {}).get(stamp) != value:
            found.append(f"{name}: timestamps.{stamp} changed or vanished")
    done_before = {
        d["target"]: d.get("deletedAt") for d in before.get("deletions") or [] if d.get("deletedAt")
    }
    done_now = {d["target"]: d.get("deletedAt") for d in now.get("deletions") or []}
    found += [f"{name}: deletion of {t} was undone" for t, at in done_before.items() if done_now.get(t) != at]
    if before.get("vault") and now.get("vault") != before.get("vault"):
        found.append(f"{name}: status.vault changed")
    if len(now.get("deletionReceipts") or []) < len(before.get("deletionReceipts") or []):
        found.append(f"{name}: deletion receipts were lost")
    return found


def vault_leftovers(vault: hvac.Client, ns: str) -> list[str]:
    """Vault objects of this namespace's jobs that still exist."""
    prefix = f"sealtune-job-{ns}"
    found = []
    for path, key in (
        ("auth/kubernetes/role", "keys"),
        ("sys/policies/acl", "keys"),
        ("transit/keys", "keys"),
    ):
        try:
            listed = vault.adapter.list(f"/v1/{path}")["data"][key]
        except hvac.exceptions.InvalidPath:
            listed = []
        found += [f"{path}/{n}" for n in listed if n.startswith(prefix)]
    for accessor in vault.adapter.list("/v1/auth/token/accessors")["data"]["keys"]:
        try:
            token = vault.auth.token.lookup_accessor(accessor)["data"]
        except hvac.exceptions.InvalidRequest:
            continue  # expired or revoked since the listing
        if any(p.startswith(prefix) for p in token.get("policies") or []):
            found.append(f"token accessor {accessor} with policies {token['policies']}")
    return found


def check_invariants(
    kubectl: Kubectl, vault: hvac.Client, ns: str, names: list[str], audit: Path
) -> list[str]:
    """Every promise, checked from the outside once the run settled."""
    violations = []
    jobs = jobs_in(kubectl, ns)
    for kind in CHILD_KINDS:
        owners = Counter(
            o["metadata"].get("labels", {}).get("sealtune.dev/finetunejob")
            for o in get(kubectl, kind, "-A", "-l", f"sealtune.dev/finetunejob-namespace={ns}")["items"]
        )
        violations += [f"{count} {kind} for {job}" for job, count in owners.items() if job and count > 1]
    for name in names:
        job = jobs.get(name)
        if job is None:
            violations.append(f"{name}: lost")
            continue
        status = job.get("status") or {}
        if status.get("phase") not in ("Succeeded", "Failed"):
            violations.append(f"{name}: not terminal ({status.get('phase')}): {status.get('conditions')}")
            continue
        for deletion in status.get("deletions") or []:
            if "deletedAt" not in deletion:
                violations.append(f"{name}: {deletion['target']} due at {deletion['dueAt']} not done")
            elif deletion["deletedAt"] < deletion["dueAt"]:
                violations.append(f"{name}: {deletion['target']} deleted before it was due")
        receipts = {r["kind"] for r in status.get("deletionReceipts") or []}
        missing = {"Job", "ConfigMap", "VaultRole", "VaultPolicy", "TransitKey"} - receipts
        if missing:
            violations.append(f"{name}: no receipt for {sorted(missing)}")
    violations += [f"orphaned in Vault: {left}" for left in vault_leftovers(vault, ns)]
    verified = subprocess.run(
        [sys.executable, "-m", "sealtune.cli", "audit", "verify", str(audit)],
        check=False,
        capture_output=True,
        text=True,
    )
    if verified.returncode != 0:
        violations.append(f"audit chain: {verified.stdout}{verified.stderr}")
    return violations


def wait_for_jobs(
    kubectl: Kubectl,
    ns: str,
    names: list[str],
    ready: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float,
    history: History | None = None,
) -> None:
    """Waits until every named job is ``ready``, watching for rollbacks; on timeout, names the
    jobs that were not, with their status."""
    waiting: list[str] = []

    def done() -> bool:
        jobs = jobs_in(kubectl, ns)
        if history is not None:
            history.observe(jobs)
        waiting[:] = [n for n in names if (j := jobs.get(n)) is None or not ready(j)]
        return not waiting

    try:
        wait_for(done, timeout, interval=2)
    except AssertionError:
        jobs = jobs_in(kubectl, ns)
        states = {n: (jobs.get(n) or {}).get("status") for n in waiting[:3]}
        raise AssertionError(f"{len(waiting)} jobs not {what} after {timeout} s: {states}") from None


def settle(kubectl: Kubectl, ns: str, names: list[str], history: History, timeout: float) -> None:
    """Waits until every job ended and its deletions are done, watching for rollbacks."""
    wait_for_jobs(
        kubectl,
        ns,
        names,
        lambda j: (condition(j, "DataDeleted") or {}).get("reason") == "DeletionsComplete",
        "settled",
        timeout,
        history,
    )


def assert_promises_kept(
    cluster: LocalCluster,
    kubectl: Kubectl,
    vault: hvac.Client,
    ns: str,
    names: list[str],
    operator: OperatorProcess,
    history: History,
    secret: str,
) -> None:
    """Every invariant after a run: those checked from outside, no rollback seen, no secret found."""
    audit = operator.audit_path
    violations = history.violations + check_invariants(kubectl, vault, ns, names, audit)
    violations += find_secrets(cluster, [secret], [operator.log_path])
    assert not violations, f"seed {SEED}:\n" + "\n".join(violations[:30])


def test_lifecycles_with_the_operator_killed_at_random_points(
    request: pytest.FixtureRequest,
    operator_with_vault: OperatorProcess,
    cluster: LocalCluster,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
) -> None:
    rng, ns, operator = seeded(request), team_namespace, operator_with_vault
    domain = transit_domain(vault, kubectl, ns, **RETENTION)
    path, secret = write_secret(vault, ns, "faults")
    names = [f"lc-{i:03d}" for i in range(LIFECYCLES)]
    pending = list(names)
    kills: Counter[str] = Counter()
    history = History()
    while pending or sum(kills.values()) < MIN_KILLS:
        for _ in range(min(len(pending), rng.randint(1, 6))):
            name = pending.pop(0)
            secrets = {"secrets": [{"vaultPath": path, "key": "token", "fileName": "token"}]}
            apply(
                kubectl,
                finetune_job(name, ns, domain, **secrets, podMetadata=kwok_runtime(rng.randint(2, 12))),
            )
        time.sleep(rng.uniform(0.2, 3.0))
        jobs = jobs_in(kubectl, ns)
        history.observe(jobs)
        kills[stage(jobs)] += 1
        operator.restart()  # SIGKILL, then a fresh process
    print(f"kills by stage: {dict(kills)} ({sum(kills.values())} in all)")
    settle(kubectl, ns, names, history, timeout=300)

    assert_promises_kept(cluster, kubectl, vault, ns, names, operator, history, secret)


def test_control_plane_restarts_and_vault_away_for_a_minute(
    request: pytest.FixtureRequest,
    operator_with_vault: OperatorProcess,
    cluster: LocalCluster,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
) -> None:
    rng, ns, operator = seeded(request), team_namespace, operator_with_vault
    domain = transit_domain(vault, kubectl, ns, **RETENTION)
    path, secret = write_secret(vault, ns, "restarts")
    secrets = {"secrets": [{"vaultPath": path, "key": "token", "fileName": "token"}]}
    history = History()
    running = [f"run-{i}" for i in range(6)]
    apply(kubectl, *(finetune_job(n, ns, domain, **secrets, podMetadata=kwok_runtime(40)) for n in running))
    wait_for_jobs(
        kubectl, ns, running, lambda j: (j.get("status") or {}).get("phase") == "Running", "Running", 90
    )
    history.observe(jobs_in(kubectl, ns))
    for component in rng.sample(["etcd", "kube-apiserver"], 2):
        hack_cluster("restart", component)
        wait_for(lambda: kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 60)

    hack_cluster("stop", "openbao")
    started = time.monotonic()
    try:
        waiting = [f"wait-{i}" for i in range(4)]
        apply(
            kubectl, *(finetune_job(n, ns, domain, **secrets, podMetadata=kwok_runtime(5)) for n in waiting)
        )

        wait_for_jobs(
            kubectl,
            ns,
            waiting,
            lambda j: (condition(j, "SecretsReady") or {}).get("reason") == "VaultUnavailable",
            "held for Vault",
            45,
        )
        while time.monotonic() - started < 60:
            assert not any(of_job(kubectl, "jobs.batch", ns, n) for n in waiting)
            history.observe(jobs_in(kubectl, ns))
            time.sleep(3)
    finally:
        hack_cluster("start", "openbao")
    settle(kubectl, ns, running + waiting, history, timeout=300)

    assert_promises_kept(cluster, kubectl, vault, ns, running + waiting, operator, history, secret)
    assert operator.process is not None and operator.process.poll() is None, "the operator died"
