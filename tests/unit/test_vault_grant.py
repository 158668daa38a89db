"""The operator's Vault calls for one job, against a recording stand-in for hvac: what is made,
and in which order (Vault itself is in tests/integration/test_vault_policies.py)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from sealtune.adapters.vault import VaultAdmin
from sealtune.api.v1alpha1 import DataDomain, FineTuneJob
from sealtune.builders import vault
from sealtune.settings import Settings
from tests.support.objects import data_domain, finetune_job

NS = "team-a"
DOMAIN_WRAPPED = "vault:v1:ZG9tYWlu"
MADE = "vault:v1:bWFkZQ=="
TRANSIT = {"type": "vaultTransit", "vaultTransit": {"keyName": "k", "wrappedDataKey": DOMAIN_WRAPPED}}


def admin() -> tuple[VaultAdmin, mock.MagicMock]:
    vault_admin = VaultAdmin(Settings(vault_address="http://127.0.0.1:1", vault_token_file="/dev/null"))
    client = mock.MagicMock()
    client.secrets.transit.generate_data_key.return_value = {"data": {"ciphertext": MADE}}
    vault_admin._client = client
    return vault_admin, client


def plan() -> vault.VaultPlan:
    body = finetune_job("tune", NS, "d", secrets=[{"vaultPath": f"kv/{NS}/x", "fileName": "x"}])
    body["metadata"]["uid"] = "uid-1"
    made = vault.plan(
        FineTuneJob.model_validate(body), DataDomain.model_validate(data_domain("d", NS, encryption=TRANSIT))
    )
    assert made is not None
    return made


def calls(client: mock.MagicMock) -> list[tuple[str, Any]]:
    return [(name, args) for name, args, _ in client.mock_calls]


@pytest.mark.parametrize("kept", [None, "vault:v1:a2VwdA=="])
def test_the_policy_is_final_before_the_role_exists(kept: str | None) -> None:
    vault_admin, client = admin()
    grant = vault_admin._grant(plan(), kept, True)
    wrapped = kept or MADE
    assert grant.wrapped_data_key == wrapped
    order = [name for name, _ in calls(client)]
    policy, role = order.index("sys.create_or_update_acl_policy"), order.index("adapter.post")
    assert order.index("secrets.transit.create_key") < policy < role
    assert ("secrets.transit.generate_data_key" in order) is (kept is None)
    (hcl,) = [args[1] for name, args in calls(client) if name == "sys.create_or_update_acl_policy"]
    assert f'"ciphertext" = ["{wrapped}"]' in hcl and f'"ciphertext" = ["{DOMAIN_WRAPPED}"]' in hcl


def test_a_job_that_may_not_run_gets_its_data_key_and_no_way_to_log_in() -> None:
    vault_admin, client = admin()
    grant = vault_admin._grant(plan(), None, False)
    order = [name for name, _ in calls(client)]
    assert "secrets.transit.generate_data_key" in order, "its ConfigMap needs the wrapped key"
    assert "sys.create_or_update_acl_policy" not in order and "adapter.post" not in order
    assert "adapter.delete" in order and "sys.delete_acl_policy" in order, "a role made earlier goes"
    assert (grant.role, grant.policy) == (None, None)
    assert "role" not in grant.status() and grant.status()["wrappedDataKey"] == MADE
