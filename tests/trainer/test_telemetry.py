from __future__ import annotations

import socket
import urllib.request

import pytest

from sealtune_trainer.telemetry import Metrics

pytestmark = pytest.mark.trainer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_prometheus_endpoint_serves_the_trainer_metrics() -> None:
    metrics = Metrics()
    port = _free_port()
    server, _thread = metrics.serve(port)
    try:
        metrics.step.set(7)
        metrics.planned_steps.set(10)
        metrics.loss.set(1.25)
        metrics.tokens_per_second.set(4321)
        metrics.phase.state("training")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
    assert "sealtune_trainer_step 7.0" in text
    assert "sealtune_trainer_planned_steps 10.0" in text
    assert "sealtune_trainer_loss_nats 1.25" in text
    assert "sealtune_trainer_tokens_per_second 4321.0" in text
    assert 'sealtune_trainer_phase{sealtune_trainer_phase="training"} 1.0' in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(name.startswith("sealtune_trainer_") for name in names)
