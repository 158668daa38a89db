"""What the chart's Deployment relies on: replicas with the same environment get distinct kopf
peering priorities (the earlier one ranks higher), and the webhook registers by Service
reference when a Service is named."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from unittest import mock

from sealtune.adapters import webhook_tls
from sealtune.handlers.main import peering_priority
from sealtune.handlers.webhook import ServiceWebhookServer, server
from sealtune.settings import Settings


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


def first_client_config(webhook: Any) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async def review(*_: Any, **__: Any) -> Any:
            raise AssertionError("no review is sent in this test")

        stream = webhook(review)
        try:
            return dict(await stream.__anext__())
        finally:
            await stream.aclose()

    return asyncio.run(first())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tls_files(host: str, directory: Path) -> dict[str, Path]:
    paths = {}
    for name, content in webhook_tls.issue(host).items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    return paths


def test_the_webhook_registers_by_service_in_a_cluster(tmp_path: Path) -> None:
    host = "sealtune-webhook.sealtune-system.svc"
    settings = Settings.from_environment(
        {
            "SEALTUNE_WEBHOOK_ADDRESS": "127.0.0.1",
            "SEALTUNE_WEBHOOK_PORT": str(free_port()),
            "SEALTUNE_WEBHOOK_SERVICE": "sealtune-webhook",
        }
    )
    webhook = server(settings, host, tls_files(host, tmp_path))
    assert isinstance(webhook, ServiceWebhookServer)
    config = first_client_config(webhook)
    assert config["service"] == {
        "namespace": "sealtune-system",
        "name": "sealtune-webhook",
        "port": 443,
        "path": "",
    }
    assert "url" not in config and config["caBundle"]


def test_the_webhook_registers_by_url_outside_a_cluster(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings.from_environment(
        {"SEALTUNE_WEBHOOK_ADDRESS": "127.0.0.1", "SEALTUNE_WEBHOOK_PORT": str(port)}
    )
    webhook = server(settings, "127.0.0.1", tls_files("127.0.0.1", tmp_path))
    assert not isinstance(webhook, ServiceWebhookServer)
    assert first_client_config(webhook)["url"] == f"https://127.0.0.1:{port}"
