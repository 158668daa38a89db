"""What the chart's Deployment relies on: replicas with the same environment get distinct kopf
peering priorities (the earlier one ranks higher), and the webhook registers by Service
reference when a Service is named."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from sealtune.adapters import webhook_tls
from sealtune.handlers.main import peering_priority
from sealtune.handlers.webhook import WEBHOOKS, server
from sealtune.settings import Settings
from tests.support.tools import free_port


def test_a_replica_started_later_ranks_lower_unless_a_priority_is_set() -> None:
    settings = Settings.from_environment({"SEALTUNE_PEERING_NAME": "sealtune"})
    with mock.patch("time.time", return_value=1_800_000_000):
        first = {peering_priority(settings) for _ in range(50)}
    with mock.patch("time.time", return_value=1_800_000_001):
        later = {peering_priority(settings) for _ in range(50)}
    assert max(later) < min(first)
    assert len(first) > 1, "replicas started in the same second still differ"
    explicit = Settings.from_environment({"SEALTUNE_PEERING_PRIORITY": "0"})
    assert peering_priority(explicit) == 0


def test_new_settings_come_from_the_environment() -> None:
    settings = Settings.from_environment(
        {
            "SEALTUNE_OPERATOR_METRICS_PORT": "8080",
            "SEALTUNE_WEBHOOK_SERVICE": "sealtune-webhook",
            "SEALTUNE_WEBHOOK_SERVICE_PORT": "8443",
        }
    )
    assert (settings.operator_metrics_port, settings.webhook_service, settings.webhook_service_port) == (
        8080,
        "sealtune-webhook",
        8443,
    )
    assert Settings().operator_metrics_port is None


def tls_files(host: str, directory: Path) -> dict[str, Path]:
    paths = {}
    for name, content in webhook_tls.issue(host).items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    return paths


def webhook_settings(**extra: str) -> Settings:
    env = {"SEALTUNE_WEBHOOK_ADDRESS": "127.0.0.1", "SEALTUNE_WEBHOOK_PORT": str(free_port())}
    return Settings.from_environment({**env, **{f"SEALTUNE_{k.upper()}": v for k, v in extra.items()}})


def test_the_webhook_registers_by_service_in_a_cluster(tmp_path: Path) -> None:
    host = "sealtune-webhook.sealtune-system.svc"
    settings = webhook_settings(webhook_service="sealtune-webhook", webhook_configuration="st")
    webhook = server(settings, mock.Mock(), host, tls_files(host, tmp_path))
    assert webhook.configuration == "st"
    (entry,) = webhook.patch({"url": "https://ignored:1", "caBundle": "Q0E="})["webhooks"]
    assert entry == {
        "name": "policy.validate.sealtune.dev",
        "clientConfig": {
            "caBundle": "Q0E=",
            "service": {
                "namespace": "sealtune-system",
                "name": "sealtune-webhook",
                "port": 443,
                "path": "/policy",
            },
            "url": None,  # a strategic merge patch's null: an earlier URL goes
        },
    }


def test_the_webhook_registers_by_url_outside_a_cluster(tmp_path: Path) -> None:
    settings = webhook_settings()
    webhook = server(settings, mock.Mock(), "127.0.0.1", tls_files("127.0.0.1", tmp_path))
    assert webhook.configuration == "validate.sealtune.dev"
    (entry,) = webhook.patch({"url": "https://127.0.0.1:9443", "caBundle": "Q0E="})["webhooks"]
    assert entry["clientConfig"] == {
        "caBundle": "Q0E=",
        "url": "https://127.0.0.1:9443/policy",
        "service": None,
    }


def test_the_chart_ships_every_webhook_the_operator_registers() -> None:
    """The chart's configuration names each of the operator's webhooks, at the path kopf serves
    its handler on, for FineTuneJobs, failing open (the reconcile enforces the same policy)."""
    chart = Path(__file__).parents[2] / "charts" / "sealtune" / "templates" / "webhook.yaml"
    text = chart.read_text()
    for handler, name in WEBHOOKS.items():
        assert f"name: {name}" in text and f"path: /{handler}" in text
    assert "failurePolicy: Ignore" in text and "finetunejobs" in text
