"""Progress reporting: logs (progress only, never data or secrets) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, start_http_server

PHASES = ["starting", "verifying", "loading", "training", "evaluating", "writing", "succeeded",
          "failed"]

log = logging.getLogger("sealtune_trainer")


def configure_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s rank={rank} %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


class Metrics:
    """The trainer's Prometheus metrics (served by local rank 0 only)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.step = Gauge("sealtune_trainer_step", "Optimizer steps completed.",
                          registry=self.registry)
        self.planned_steps = Gauge("sealtune_trainer_planned_steps",
                                   "Optimizer steps the run will take in all.",
                                   registry=self.registry)
        self.loss = Gauge("sealtune_trainer_loss_nats",
                          "Mean training loss per labelled token of the latest step.",
                          registry=self.registry)
        self.tokens_per_second = Gauge("sealtune_trainer_tokens_per_second",
                                       "Input tokens per second of this process, last interval.",
                                       registry=self.registry)
        self.tokens = Counter("sealtune_trainer_input_tokens",
                              "Input tokens processed by this process.", registry=self.registry)
        self.phase = Enum("sealtune_trainer_phase", "What the trainer is doing.",
                          states=PHASES, registry=self.registry)
        self.phase.state("starting")

    def serve(self, port: int) -> Any:
        """Starts the HTTP endpoint; port 0 disables it."""
        if port:
            return start_http_server(port, registry=self.registry)
        return None
