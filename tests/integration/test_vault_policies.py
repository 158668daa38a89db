"""Vault policies as OpenBao enforces them, on a dev server of this module's own (no cluster): a
job's policy decrypts only the wrapped keys it pins, and the operator's own policy
(deploy/vault/sealtune-operator.hcl) lets it make what a job needs and give a job's role no
policy but a sealtune-job-* one."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from sealtune.adapters.vault import VaultAdmin
from sealtune.api.v1alpha1 import DataDomain, FineTuneJob
from sealtune.builders import vault as vault_builders
from sealtune.names import workload_namespace
from sealtune.settings import Settings
from tests.support.cluster import REPO_ROOT
from tests.support.objects import data_domain, finetune_job
from tests.support.tools import free_port, tool

NS = "team-a"
DOMAIN_KEY = "domain-team-a"
OPERATOR_POLICY = REPO_ROOT / "deploy" / "vault" / "sealtune-operator.hcl"


@pytest.fixture(scope="module")
def bao() -> Iterator[hvac.Client]:
    """Root's client of a fresh dev server, mounted as the operator's policy expects: Kubernetes
    auth at kubernetes, KV v2 at secret (the dev server's own), transit at transit."""
    port, root = free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [
            tool("bao"),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={root}",
            # Else it leaves its root token in ~/.vault-token, which every Vault client on this
            # host would then send to the cluster's OpenBao.
            "-dev-no-store-token",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = hvac.Client(url=f"http://127.0.0.1:{port}", token=root)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.sys.read_health_status(method="GET").get("initialized"):
                    break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
            time.sleep(0.2)
        # Unconfigured: roles can be written without it, and nobody logs in here.
        client.sys.enable_auth_method("kubernetes")
        client.sys.enable_secrets_engine("transit")
        yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


def token(bao: hvac.Client, policy: str, hcl: str) -> hvac.Client:
    bao.sys.create_or_update_acl_policy(policy, hcl)
    minted = bao.auth.token.create(policies=[policy], no_default_policy=True, ttl="10m")
    return hvac.Client(url=bao.url, token=minted["auth"]["client_token"])


def wrapped(bao: hvac.Client, key: str) -> str:
    return str(bao.secrets.transit.generate_data_key(key, key_type="wrapped")["data"]["ciphertext"])


def plan(bao: hvac.Client, name: str) -> vault_builders.VaultPlan:
    """The plan of a job declaring one secret of its team, on a domain encrypted under DOMAIN_KEY."""
    bao.secrets.transit.create_key(DOMAIN_KEY)
    body = finetune_job(name, NS, "d", secrets=[{"vaultPath": f"secret/data/{NS}/hf", "fileName": "hf"}])
    body["metadata"]["uid"] = f"{secrets.token_hex(4)}-0000-0000-0000-000000000000"
    encryption = {
        "type": "vaultTransit",
        "vaultTransit": {"keyName": DOMAIN_KEY, "wrappedDataKey": wrapped(bao, DOMAIN_KEY)},
    }
    made = vault_builders.plan(
        FineTuneJob.model_validate(body),
        DataDomain.model_validate(data_domain("d", NS, encryption=encryption)),
    )
    assert made is not None and made.domain_wrapped_key
    return made


def decrypt(client: hvac.Client, key: str, **body: Any) -> None:
    client.adapter.post(f"/v1/transit/decrypt/{key}", json=body)


def test_a_job_decrypts_only_the_wrapped_keys_its_policy_pins(bao: hvac.Client) -> None:
    job = plan(bao, "pinned")
    assert job.domain_wrapped_key
    bao.secrets.transit.create_key(job.name)
    own, other_own = wrapped(bao, job.name), wrapped(bao, job.name)
    other_domain = wrapped(bao, DOMAIN_KEY)  # another job's, or the domain's other data
    bao.secrets.kv.v2.create_or_update_secret(f"{NS}/hf", secret={"token": "a"})
    bao.secrets.kv.v2.create_or_update_secret("team-b/hf", secret={"token": "b"})
    pod = token(bao, job.name, job.policy_hcl(own))

    decrypt(pod, DOMAIN_KEY, ciphertext=job.domain_wrapped_key)
    decrypt(pod, job.name, ciphertext=own)
    assert pod.adapter.get(f"/v1/secret/data/{NS}/hf")["data"]["data"] == {"token": "a"}
    refused: list[tuple[str, dict[str, Any]]] = [
        (DOMAIN_KEY, {"ciphertext": other_domain}),
        (job.name, {"ciphertext": other_own}),
        (DOMAIN_KEY, {"batch_input": [{"ciphertext": other_domain}]}),
        (DOMAIN_KEY, {"ciphertext": job.domain_wrapped_key, "batch_input": [{"ciphertext": other_domain}]}),
        (DOMAIN_KEY, {"ciphertext": job.domain_wrapped_key, "context": "eA=="}),
        (DOMAIN_KEY, {"ciphertext": [job.domain_wrapped_key]}),
    ]
    for key, body in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            decrypt(pod, key, **body)
    with pytest.raises(hvac.exceptions.Forbidden):
        pod.adapter.get("/v1/secret/data/team-b/hf")

    # Before the job's key is made, its policy grants nothing under it.
    early = token(bao, f"{job.name}-early", job.policy_hcl(None))
    with pytest.raises(hvac.exceptions.Forbidden):
        decrypt(early, job.name, ciphertext=own)


@pytest.fixture(scope="module")
def operator(bao: hvac.Client) -> hvac.Client:
    return token(bao, "sealtune-operator", OPERATOR_POLICY.read_text())


BINDING = {"bound_service_account_names": ["x"], "bound_service_account_namespaces": [NS]}


@pytest.mark.parametrize(
    "parameters",
    [
        {"token_policies": ["root"]},
        {"token_policies": ["default", "admin"]},
        {"token_policies": ["sealtune-job-x", "admin"]},
        {"token_policies": "sealtune-job-x,admin"},
        {"token_policies": "admin"},
        {"policies": ["admin"]},
        {"policies": "sealtune-job-x"},
        {"token_policies": "sealtune-job-x", "policies": ["admin"]},
        {"token_policies": "sealtune-job-x", "token_period": "8760h"},
        {"token_policies": "sealtune-job-x", "token_type": "batch"},
        # OpenBao matches the pattern against strings only: a list is refused even when each
        # item would match, so the operator sends one string.
        {"token_policies": ["sealtune-job-x"]},
    ],
    ids=str,
)
def test_the_operator_cannot_give_a_job_role_another_policy(
    bao: hvac.Client, operator: hvac.Client, parameters: dict[str, Any]
) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        operator.adapter.post("/v1/auth/kubernetes/role/sealtune-job-refused", json=BINDING | parameters)
    with pytest.raises(hvac.exceptions.InvalidPath):
        bao.adapter.get("/v1/auth/kubernetes/role/sealtune-job-refused")


def test_the_operator_grants_and_removes_a_job_under_its_own_policy(
    bao: hvac.Client, operator: hvac.Client, tmp_path: Path
) -> None:
    """The operator's real calls (VaultAdmin), with only its policy: the role carries the job's
    policy alone, the policy pins the job's key as made, and all of it goes by the job's name."""
    operator.adapter.post(
        "/v1/auth/kubernetes/role/sealtune-job-x", json=BINDING | {"token_policies": "sealtune-job-x"}
    )
    assert bao.adapter.get("/v1/auth/kubernetes/role/sealtune-job-x")["data"]["token_policies"] == [
        "sealtune-job-x"
    ]

    job = plan(bao, "granted")
    bao.secrets.kv.v2.create_or_update_secret(f"{NS}/hf", secret={"token": "a"})
    (tmp_path / "token").write_text(str(operator.token))
    admin = VaultAdmin(Settings(vault_address=bao.url, vault_token_file=str(tmp_path / "token")))
    grant = asyncio.run(admin.grant(job, None))
    assert grant.wrapped_data_key
    role = bao.adapter.get(f"/v1/auth/kubernetes/role/{job.name}")["data"]
    assert role["token_policies"] == [job.name]
    assert role["bound_service_account_namespaces"] == [workload_namespace("d")], (
        "the domain's, not the team's"
    )
    policy = bao.sys.read_acl_policy(job.name)["data"]["policy"]
    assert policy == job.policy_hcl(grant.wrapped_data_key)
    assert asyncio.run(admin.grant(job, grant.wrapped_data_key)) == grant, "granting again changes nothing"

    asyncio.run(admin.revoke(job.name))
    asyncio.run(admin.shred("transit", job.name))
    assert asyncio.run(admin.revoked(job.name))
    assert asyncio.run(admin.shredded("transit", job.name))
