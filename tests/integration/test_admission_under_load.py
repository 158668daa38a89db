"""The webhook answers while the operator's own requests fill its API client.

The operator's own writes to FineTuneJobs (the Vault finalizer, its removal) pass through its
webhook. Were the webhook's reads to wait for a slot those very writes hold, every admission
would wait until the API server gave up on it and admitted the write unchecked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster, hack_cluster
from tests.support.kube import apply, get, of_job, wait_for
from tests.support.objects import finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess, with_vault
from tests.support.vaultdata import transit_domain, write_secret

WEBHOOK = "policy.validate.sealtune.dev"


@pytest.fixture
def operator_with_one_slot(
    cluster: LocalCluster, crds_installed: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """An operator whose API client has a single slot: each of its own writes holds it."""
    hack_cluster("up")
    process = with_vault(cluster, tmp_path, max_api_concurrency="1")
    process.start()
    yield process
    process.stop()


def webhook_failures(kubectl: Kubectl) -> float:
    """Admissions of our webhook the API server gave up on (timed out, refused, unreachable)."""
    text = kubectl("get", "--raw", "/metrics").stdout
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "apiserver_admission_webhook_fail_open_count"
        for sample in family.samples
        if sample.labels.get("name") == WEBHOOK
    )


def test_webhook_reads_never_wait_behind_the_operators_own_writes(
    operator_with_one_slot: OperatorProcess, vault: hvac.Client, kubectl: Kubectl, team_namespace: str
) -> None:
    ns = team_namespace
    domain = transit_domain(vault, kubectl, ns, checkpoints="0s")
    path, _ = write_secret(vault, ns, "admission")
    secrets = {"secrets": [{"vaultPath": path, "key": "token", "fileName": "token"}]}
    names = [f"held-{i}" for i in range(4)]
    before = webhook_failures(kubectl)

    apply(kubectl, *(finetune_job(n, ns, domain, **secrets, podMetadata=kwok_runtime(5)) for n in names))
    wait_for(lambda: all(of_job(kubectl, "jobs.batch", ns, n) for n in names))

    finalized = [n for n in names if get(kubectl, "ftj", n, "-n", ns)["metadata"].get("finalizers")]
    assert finalized == names, "each job's finalizer is an UPDATE the webhook reviewed"
    assert webhook_failures(kubectl) == before, "the API server gave up on the webhook"
