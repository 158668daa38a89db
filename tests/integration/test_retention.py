"""Deletion schedules: every copy deleted when the domain's retention says, never before, with
signed receipts in status and in the hash-chained audit log, also when the deadlines passed
while the operator was down."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from sealtune import receipts, signing
from tests.conftest import Kubectl
from tests.support.artifacts import artifact_manifest, job_manifest, write_model
from tests.support.kube import apply, get, wait_condition, wait_for, workload_of
from tests.support.objects import finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess
from tests.support.vaultdata import transit_domain

COPIES_SECONDS = 25
JOBS = ("first", "second", "third")


def status_of(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return get(kubectl, "ftj", name, "-n", ns)["status"]  # type: ignore[no-any-return]


def finished_at(kubectl: Kubectl, ns: str, name: str) -> datetime:
    stamp = status_of(kubectl, ns, name)["timestamps"]["finishedAt"]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def deletion(status: dict[str, Any], target: str) -> dict[str, Any]:
    return next(d for d in status["deletions"] if d["target"] == target)


def exists(kubectl: Kubectl, *args: str) -> bool:
    return kubectl("get", *args, check=False).returncode == 0


def public_key(kubectl: Kubectl) -> bytes:
    cm = get(kubectl, "configmap", "sealtune-signing-key", "-n", "sealtune-system")
    return str(cm["data"]["public.pem"]).encode()


def audit_verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealtune.cli", "audit", "verify", str(path), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_deadlines_passed_while_the_operator_was_down_are_met_on_its_return_and_none_early(
    operator_with_vault: OperatorProcess,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
) -> None:
    ns, operator = team_namespace, operator_with_vault
    domain = transit_domain(vault, kubectl, ns, trainingCopies=f"{COPIES_SECONDS}s", checkpoints="2h")
    apply(kubectl, *(finetune_job(name, ns, domain, podMetadata=kwok_runtime(3)) for name in JOBS))
    for name in JOBS:
        wait_condition(kubectl, ns, name, "Succeeded", timeout=120)
        # Role and policy go as the job ends; the data key and the copies wait.
        wait_for(lambda name=name: "deletedAt" in deletion(status_of(kubectl, ns, name), "vaultRole"), 30)

    operator.kill()
    due = max(finished_at(kubectl, ns, n) for n in JOBS) + timedelta(seconds=COPIES_SECONDS + 5)
    while datetime.now(UTC) < due:
        time.sleep(1)
    works = {n: workload_of(kubectl, ns, n) for n in JOBS}
    assert all(exists(kubectl, "job", w.batch_job, "-n", w.namespace) for w in works.values()), (
        "deleted while the operator was down"
    )

    restarted = time.monotonic()
    operator.start()
    for name in JOBS:
        wait_for(
            lambda name=name: "deletedAt" in deletion(status_of(kubectl, ns, name), "trainingCopies"), 60
        )
    caught_up = time.monotonic() - restarted
    print(f"every overdue deletion done {caught_up:.1f} s after the restart")  # shown with -s
    assert caught_up < 60
    pem = public_key(kubectl)
    for name in JOBS:
        status, work = status_of(kubectl, ns, name), works[name]
        assert not exists(kubectl, "job", work.batch_job, "-n", work.namespace)
        assert not exists(kubectl, "configmap", work.config_map, "-n", work.namespace)
        kinds = {(r["kind"], r["name"]) for r in status["deletionReceipts"]}
        role = status["vault"]["role"]
        assert {
            ("Job", work.batch_job),
            ("ConfigMap", work.config_map),
            ("VaultRole", role),
            ("VaultPolicy", role),
        } <= kinds
        assert all(receipts.verify_receipt(r, pem) for r in status["deletionReceipts"])
        assert all(
            r["verification"].startswith(("GET answered 404", "Vault answered 404"))
            for r in status["deletionReceipts"]
        )
        # The data key is due in two hours: untouched.
        assert "deletedAt" not in deletion(status, "dataKey")
        assert (
            vault.secrets.transit.read_key(status["vault"]["dataKey"])["data"]["name"]
            == status["vault"]["dataKey"]
        )
        cond = next(c for c in status["conditions"] if c["type"] == "DataDeleted")
        assert (cond["status"], cond["reason"]) == ("False", "DeletionsPending")

    audit = operator.audit_path
    result = audit_verify(audit)
    assert result.returncode == 0, result.stdout + result.stderr
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    deleted = {(e["subject"]["kind"], e["subject"]["name"]) for e in entries if e["event"] == "Deletion"}
    assert ("Job", works["first"].batch_job) in deleted and (
        "ConfigMap",
        works["third"].config_map,
    ) in deleted
    assert {"PolicyDecision", "VaultRoleCreated", "VaultRoleRevoked", "Placement"} <= {
        e["event"] for e in entries
    }

    tamper_and_verify(audit, entries)


def tamper_and_verify(audit: Path, entries: list[dict[str, Any]]) -> None:
    """One entry edited, one removed, two swapped: each found, its position named."""
    lines = audit.read_text().splitlines(keepends=True)
    assert len(lines) >= 6

    def problems(changed: list[str]) -> list[dict[str, Any]]:
        copy = audit.with_name("tampered.jsonl")
        copy.write_text("".join(changed))
        result = audit_verify(copy)
        assert result.returncode == 1, result.stdout
        return json.loads(result.stdout)["problems"]  # type: ignore[no-any-return]

    edited = [*lines]
    entry = json.loads(edited[2])
    entry["details"]["message"] = "nothing to see"
    edited[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    found = problems(edited)
    assert (found[0]["line"], found[0]["kind"]) == (3, "edited")

    found = problems(lines[:3] + lines[4:])
    assert (found[0]["line"], found[0]["kind"]) == (4, "removed")

    found = problems([*lines[:1], lines[2], lines[1], *lines[3:]])
    assert (found[0]["line"], found[0]["kind"]) == (3, "reordered")
    assert "belongs before line 2" in found[0]["message"]


def test_the_data_key_is_crypto_shredded_with_its_checkpoints_and_the_receipt_proves_it(
    operator_with_vault: OperatorProcess,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
) -> None:
    ns = team_namespace
    domain = transit_domain(vault, kubectl, ns, checkpoints="0s")
    apply(kubectl, finetune_job("shredded", ns, domain, podMetadata=kwok_runtime(3)))
    wait_condition(kubectl, ns, "shredded", "Succeeded", timeout=120)
    wait_for(lambda: "deletedAt" in deletion(status_of(kubectl, ns, "shredded"), "dataKey"), 30)
    status = status_of(kubectl, ns, "shredded")
    key = status["vault"]["dataKey"]
    (shred,) = [r for r in status["deletionReceipts"] if r["kind"] == "TransitKey"]
    assert shred["name"] == f"transit/{key}"
    assert shred["verification"] == "transit decrypt refused by Vault: encryption key not found"
    assert shred["policy"] == "retention.checkpoints=0s"
    assert receipts.verify_receipt(shred, public_key(kubectl))
    forged = {**shred, "deletedAt": "2020-01-01T00:00:00Z"}
    assert not receipts.verify_receipt(forged, public_key(kubectl))
    with pytest.raises(hvac.exceptions.InvalidRequest, match="encryption key not found"):
        vault.secrets.transit.decrypt_data(key, status["vault"]["wrappedDataKey"])
    assert base64.b64decode(shred["signature"])


def test_artifacts_past_their_retention_go_unless_approved_and_pinned(
    operator_with_vault: OperatorProcess, kubectl: Kubectl, team_namespace: str, tmp_path: Path
) -> None:
    ns = team_namespace
    signer = signing.PemSigner(signing.new_private_key_pem())
    files = write_model(tmp_path / "model")
    for name in ("short-lived", "pinned"):
        artifact = artifact_manifest(name, files, signer, job=job_manifest("tune", ns))
        artifact["spec"]["retention"] = {"keepFor": "8s", "pinWhileApproved": True}
        kubectl("create", "-f", "-", input=json.dumps(artifact))
    approval = {"approver": "alice@example.com", "approvedAt": "2026-01-01T00:00:00Z", "reason": "reviewed"}
    kubectl(
        "patch",
        "modelartifact",
        "pinned",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        json.dumps({"promotion": {"stage": "Approved", "approvals": [approval]}}),
    )
    wait_for(lambda: not exists(kubectl, "modelartifact", "short-lived", "-n", ns), 45)
    time.sleep(10)  # well past the pinned one's keepFor
    assert exists(kubectl, "modelartifact", "pinned", "-n", ns), "an Approved, pinned artifact was deleted"

    entries = [json.loads(line) for line in operator_with_vault.audit_path.read_text().splitlines()]
    (deleted,) = [e for e in entries if e["event"] == "Deletion" and e["subject"]["name"] == "short-lived"]
    assert deleted["details"]["policy"] == "spec.retention.keepFor=8s"
    assert receipts.verify_receipt(deleted["details"], public_key(kubectl))
    approvals = [e for e in entries if e["event"] == "Approval" and e["subject"]["name"] == "pinned"]
    assert [a["details"]["approver"] for a in approvals] == ["alice@example.com"]
