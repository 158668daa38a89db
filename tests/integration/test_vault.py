"""Vault per job, against the real OpenBao with Kubernetes auth pointed at the test API server:
the operator logs in with its own ServiceAccount (no root token), makes each job's policy, role
and transit key before its Job, the init container's code delivers secrets as 0400 files, and
everything is revoked and crypto-shredded when the job ends or is deleted."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from sealtune_trainer import sealing
from tests.conftest import Kubectl
from tests.support import vaultdata
from tests.support.cluster import LocalCluster, hack_cluster
from tests.support.kube import apply, get, of_job, wait_condition, wait_for, workload_of
from tests.support.objects import domain_with_claims, finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess
from tests.support.scan import find_secrets
from tests.support.vaultdata import gone, login

SECRET_VALUES: list[str] = []
"""Every secret value this module writes; the last test scans for all of them."""


def secret_value() -> str:
    value = f"sv-{uuid.uuid4().hex}"
    SECRET_VALUES.append(value)
    return value


@pytest.fixture
def vault_domain(vault: hvac.Client, kubectl: Kubectl, team_namespace: str) -> dict[str, Any]:
    """A domain whose data key is wrapped by its own transit key, as an admin sets it up; its
    checkpoints (and so the jobs' data keys) are kept for no time after a job ends."""
    namespace = team_namespace
    key = f"domain-{namespace}"
    vault.secrets.transit.create_key(key, key_type="aes256-gcm96")
    data_key = vault.secrets.transit.generate_data_key(key, key_type="plaintext", bits=256)["data"]
    SECRET_VALUES.append(data_key["plaintext"])
    name = f"{namespace}-v"
    encryption = {
        "type": "vaultTransit",
        "vaultTransit": {"keyName": key, "wrappedDataKey": data_key["ciphertext"]},
    }
    apply(
        kubectl, *domain_with_claims(name, namespace, encryption=encryption, retention={"checkpoints": "0s"})
    )
    return {"name": name, "plaintext": data_key["plaintext"], "key": key}


def write_secret(vault: hvac.Client, namespace: str, name: str) -> tuple[str, str]:
    path, value = vaultdata.write_secret(vault, namespace, name)
    SECRET_VALUES.append(value)
    return path, value


def declared(path: str, file_name: str) -> dict[str, Any]:
    return {"secrets": [{"vaultPath": path, "key": "token", "fileName": file_name}]}


def vault_status(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return get(kubectl, "ftj", name, "-n", ns)["status"]["vault"]  # type: ignore[no-any-return]


def pod_token(kubectl: Kubectl, ns: str, job: str) -> str:
    """A token like the one the kubelet projects into the job's pods: its ServiceAccount (in its
    domain's workload namespace), the audience vault. Only a cluster admin can mint it."""
    work = workload_of(kubectl, ns, job)
    return kubectl(  # type: ignore[no-any-return]
        "create",
        "token",
        work.service_account,
        "-n",
        work.namespace,
        "--audience",
        "vault",
        "--duration",
        "10m",
    ).stdout.strip()


def run_init_container(
    cluster: LocalCluster, kubectl: Kubectl, ns: str, job: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    """The init container's entry point with the instructions from the job's ConfigMap; only
    the token path and the output directory point into ``tmp``."""
    work = workload_of(kubectl, ns, job)
    config = json.loads(
        get(kubectl, "configmap", work.config_map, "-n", work.namespace)["data"]["vault.json"]
    )
    (tmp / "token").write_text(pod_token(kubectl, ns, job))
    (tmp / "secrets").mkdir()
    config |= {"tokenPath": str(tmp / "token"), "secretsDir": str(tmp / "secrets"), "retrySeconds": 0}
    (tmp / "vault.json").write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "sealtune_trainer.vault_init", "--config", str(tmp / "vault.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_each_job_reads_only_its_declared_paths_then_everything_is_revoked_and_shredded(
    vault_operator: OperatorProcess,
    cluster: LocalCluster,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
    vault_domain: dict[str, Any],
    tmp_path: Path,
) -> None:
    ns, domain = team_namespace, vault_domain["name"]
    alpha, alpha_value = write_secret(vault, ns, "alpha")
    beta, _ = write_secret(vault, ns, "beta")
    undeclared, _ = write_secret(vault, ns, "undeclared")
    apply(
        kubectl,
        finetune_job("alpha", ns, domain, **declared(alpha, "alpha-token"), podMetadata=kwok_runtime(25)),
        finetune_job("beta", ns, domain, **declared(beta, "beta-token"), podMetadata=kwok_runtime(600)),
    )
    ready = wait_condition(kubectl, ns, "alpha", "SecretsReady", reason="VaultRoleReady", timeout=60)
    assert "grant 1 secret path" in ready["message"]
    wait_condition(kubectl, ns, "beta", "SecretsReady", reason="VaultRoleReady", timeout=60)
    a, b = vault_status(kubectl, ns, "alpha"), vault_status(kubectl, ns, "beta")
    assert a["role"] != b["role"] and a["dataKey"] != b["dataKey"]
    assert a["wrappedDataKey"].startswith("vault:v1:")
    wait_for(lambda: _jobs(kubectl, ns) == 2, 60)

    # The init container's code, with a token of alpha's ServiceAccount.
    result = run_init_container(cluster, kubectl, ns, "alpha", tmp_path)
    assert result.returncode == 0, result.stderr
    files = {p.name: p for p in (tmp_path / "secrets").iterdir()}
    assert set(files) == {"alpha-token", "data.key", "job.key"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o400 for p in files.values())
    assert files["alpha-token"].read_text() == alpha_value
    assert files["data.key"].read_text() == vault_domain["plaintext"]
    assert len(sealing.load_key(files["job.key"])) == 32
    assert alpha_value not in result.stderr + result.stdout

    # alpha's own token: its declared path, nothing else.
    jwt = pod_token(kubectl, ns, "alpha")
    client = login(cluster, a["role"], jwt)
    assert client.adapter.get(f"/v1/{alpha}")["data"]["data"]["token"] == alpha_value
    for path in (beta, undeclared, f"secret/data/{ns}/none"):
        with pytest.raises(hvac.exceptions.Forbidden):
            client.adapter.get(f"/v1/{path}")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.decrypt_data(b["dataKey"], b["wrappedDataKey"])
    with pytest.raises(hvac.exceptions.Forbidden):
        login(cluster, b["role"], jwt)  # alpha's ServiceAccount cannot log in as beta

    # alpha ends: role and policy go at once, its data key with its checkpoints (0s).
    wait_condition(kubectl, ns, "alpha", "Succeeded", timeout=120)
    revoked = wait_condition(
        kubectl, ns, "alpha", "SecretsReady", "False", reason="VaultRoleRevoked", timeout=30
    )
    assert revoked["observedGeneration"] >= 1

    def deletions_done() -> list[dict[str, Any]] | None:
        deletions = get(kubectl, "ftj", "alpha", "-n", ns)["status"].get("deletions") or []
        done = [d for d in deletions if d.get("deletedAt")]
        return deletions if len(done) == 2 else None

    deletions = wait_for(deletions_done, 30)
    assert {d["target"] for d in deletions if d.get("deletedAt")} == {"vaultRole", "dataKey"}
    assert gone(vault, f"auth/kubernetes/role/{a['role']}")
    assert gone(vault, f"sys/policies/acl/{a['policy']}")
    with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest), match=r"role|denied"):
        login(cluster, a["role"], pod_token(kubectl, ns, "alpha"))
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.get(f"/v1/{alpha}")  # the token issued before the end has no grant left
    # Crypto-shredding: the job's wrapped key cannot be unwrapped by anyone, root included, so
    # whatever was sealed under it is gone for good.
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath)):
        vault.secrets.transit.decrypt_data(a["dataKey"], a["wrappedDataKey"])
    assert gone(vault, f"transit/keys/{a['dataKey']}")

    # beta is deleted while it runs: the finalizer removes its Vault objects first.
    kubectl("delete", "ftj", "beta", "-n", ns, "--wait=false")
    wait_for(lambda: kubectl("get", "ftj", "beta", "-n", ns, check=False).returncode != 0, 60)
    assert gone(vault, f"auth/kubernetes/role/{b['role']}")
    assert gone(vault, f"sys/policies/acl/{b['policy']}")
    assert gone(vault, f"transit/keys/{b['dataKey']}")


def _jobs(kubectl: Kubectl, ns: str) -> int:
    """The batch Jobs of the team's FineTuneJobs, in their domains' workload namespaces."""
    return len(get(kubectl, "jobs.batch", "-A", "-l", f"sealtune.dev/finetunejob-namespace={ns}")["items"])


def test_a_missing_secret_path_is_named_and_holds_the_job_until_it_exists(
    vault_operator: OperatorProcess, vault: hvac.Client, kubectl: Kubectl, team_namespace: str
) -> None:
    ns = team_namespace
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns))
    path = f"secret/data/{ns}/later"
    apply(kubectl, finetune_job("waits", ns, f"{ns}-d", **declared(path, "later")))
    missing = wait_condition(
        kubectl, ns, "waits", "SecretsReady", "False", reason="SecretPathNotFound", timeout=60
    )
    assert path in missing["message"]
    assert get(kubectl, "ftj", "waits", "-n", ns)["status"]["phase"] == "Pending"
    assert _jobs(kubectl, ns) == 0, "a Job was created before its Vault role"
    vault.secrets.kv.v2.create_or_update_secret(f"{ns}/later", secret={"token": secret_value()})
    wait_condition(kubectl, ns, "waits", "SecretsReady", reason="VaultRoleReady", timeout=60)
    wait_for(lambda: _jobs(kubectl, ns) == 1, 30)


def test_a_job_that_needs_no_vault_makes_nothing_there(
    vault_operator: OperatorProcess, kubectl: Kubectl, team_namespace: str
) -> None:
    ns = team_namespace
    apply(kubectl, *domain_with_claims(f"{ns}-d", ns), finetune_job("plain", ns, f"{ns}-d"))
    ready = wait_condition(kubectl, ns, "plain", "SecretsReady", reason="NotNeeded", timeout=60)
    assert ready["status"] == "True"
    ftj = get(kubectl, "ftj", "plain", "-n", ns)
    assert "vault" not in ftj["status"]


OUTAGE_SECONDS = 60


def hold_through_outage(kubectl: Kubectl, ns: str, job: dict[str, Any], reason: str) -> dict[str, Any]:
    """Applies ``job`` while Vault is away and checks, for the whole outage, that it waits with
    a condition naming the cause and that no Job is made for it."""
    started = time.monotonic()
    apply(kubectl, job)
    name = job["metadata"]["name"]
    waiting = wait_condition(kubectl, ns, name, "SecretsReady", "False", reason=reason, timeout=45)
    while time.monotonic() - started < OUTAGE_SECONDS:
        assert not of_job(kubectl, "jobs.batch", ns, name), "a Job was made without Vault"
        time.sleep(2)
    assert get(kubectl, "ftj", name, "-n", ns)["status"]["phase"] == "Pending"
    return waiting


def test_vault_stopped_or_sealed_for_a_minute_holds_new_jobs_which_start_when_it_returns(
    vault_operator: OperatorProcess,
    cluster: LocalCluster,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
    vault_domain: dict[str, Any],
) -> None:
    ns, domain = team_namespace, vault_domain["name"]
    path, _ = write_secret(vault, ns, "steady")
    apply(kubectl, finetune_job("before", ns, domain, **declared(path, "s"), podMetadata=kwok_runtime(900)))
    wait_condition(kubectl, ns, "before", "SecretsReady", reason="VaultRoleReady", timeout=60)
    before = vault_status(kubectl, ns, "before")

    hack_cluster("stop", "openbao")
    try:
        waiting = hold_through_outage(
            kubectl, ns, finetune_job("stopped", ns, domain, **declared(path, "s")), "VaultUnavailable"
        )
        assert "unreachable" in waiting["message"]
    finally:
        hack_cluster("start", "openbao")
    wait_condition(kubectl, ns, "stopped", "SecretsReady", reason="VaultRoleReady", timeout=60)
    wait_for(lambda: of_job(kubectl, "jobs.batch", ns, "stopped"), 30)

    vault.sys.seal()
    try:
        waiting = hold_through_outage(
            kubectl, ns, finetune_job("sealed", ns, domain, **declared(path, "s")), "VaultSealed"
        )
        assert waiting["message"] == "Vault is sealed"
    finally:
        unseal_key = json.loads((cluster.state / "openbao" / "init.json").read_text())["unseal_keys_b64"][0]
        vault.sys.submit_unseal_key(unseal_key)
    wait_condition(kubectl, ns, "sealed", "SecretsReady", reason="VaultRoleReady", timeout=60)
    wait_for(lambda: of_job(kubectl, "jobs.batch", ns, "sealed"), 30)

    # Nothing lost: the job made before the outages kept its Vault objects and key.
    assert vault_status(kubectl, ns, "before") == before
    assert not gone(vault, f"auth/kubernetes/role/{before['role']}")
    assert not gone(vault, f"transit/keys/{before['dataKey']}")
    assert not gone(vault, f"sys/policies/acl/{before['policy']}")


def test_no_secret_value_is_in_any_object_etcd_event_or_log(
    vault_operator: OperatorProcess, cluster: LocalCluster
) -> None:
    assert SECRET_VALUES, "the tests above wrote secrets"
    assert find_secrets(cluster, SECRET_VALUES, [vault_operator.log_path]) == []
