"""The operator's own Vault token: a clean shutdown revokes it, so an operator restarted many
times (a rollout, a crash loop that still exits cleanly) leaves no live tokens behind."""

from __future__ import annotations

from pathlib import Path

import hvac

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
from tests.support.kube import apply, wait_condition
from tests.support.objects import finetune_job, kwok_runtime
from tests.support.operator import with_vault
from tests.support.vaultdata import transit_domain


def operator_tokens(vault: hvac.Client) -> set[str]:
    """Accessors of live tokens issued to the operator's role."""
    found = set()
    for accessor in vault.adapter.list("/v1/auth/token/accessors")["data"]["keys"]:
        try:
            token = vault.auth.token.lookup_accessor(accessor)["data"]
        except hvac.exceptions.InvalidRequest:
            continue  # expired or revoked since the listing
        if (token.get("meta") or {}).get("role") == "sealtune-operator":
            found.add(accessor)
    return found


def test_a_clean_shutdown_revokes_the_operators_own_token(
    cluster: LocalCluster,
    crds_installed: None,
    vault: hvac.Client,
    kubectl: Kubectl,
    team_namespace: str,
    tmp_path: Path,
) -> None:
    before = operator_tokens(vault)  # earlier operators' (killed ones keep theirs until TTL)
    operator = with_vault(cluster, tmp_path)
    operator.start()
    try:
        domain = transit_domain(vault, kubectl, team_namespace)
        apply(kubectl, finetune_job("uses-vault", team_namespace, domain, podMetadata=kwok_runtime(30)))
        wait_condition(kubectl, team_namespace, "uses-vault", "SecretsReady", timeout=60)
        during = operator_tokens(vault) - before
        assert len(during) == 1, f"the operator should hold exactly one token of its own, found {during}"
    finally:
        operator.stop()

    assert not operator_tokens(vault) & during, "the operator's token outlived its shutdown"
    assert "could not revoke" not in operator.log_tail(200)
