"""Writes the demo's synthetic "internal knowledge base": questions an engineer asks about a
made-up company's internal services, answered from a fixed table of facts. Deterministic:
running it again writes the same bytes, so the shipped file and its digest never drift.

    python hack/knowledge-base/generate.py [OUT]   default: hack/knowledge-base/data/knowledge-base.jsonl

Each line is one chat record ({"messages": [user, assistant]}), the format a DataDomain with
source.format chat declares. Nothing here is real: names, ports and channels are invented.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "knowledge-base.jsonl"

# service: (owning team, port, datastore, region, backup interval in hours)
SERVICES = {
    "billing-gateway": ("payments", 8443, "postgres", "eu-west-1", 6),
    "ledger-api": ("payments", 9090, "postgres", "eu-west-1", 4),
    "invoice-renderer": ("payments", 8080, "object storage", "eu-central-1", 24),
    "search-indexer": ("discovery", 7700, "opensearch", "eu-west-1", 12),
    "catalog-service": ("discovery", 8081, "postgres", "eu-central-1", 6),
    "recommendations": ("discovery", 8500, "redis", "eu-west-1", 24),
    "identity-provider": ("security", 8443, "postgres", "eu-west-1", 2),
    "secrets-broker": ("security", 8200, "raft", "eu-west-1", 1),
    "audit-collector": ("security", 6514, "object storage", "eu-central-1", 24),
    "orders-api": ("commerce", 8080, "postgres", "eu-west-1", 4),
    "cart-service": ("commerce", 8082, "redis", "eu-west-1", 12),
    "checkout-worker": ("commerce", 9000, "kafka", "eu-central-1", 6),
    "shipping-estimator": ("logistics", 8090, "postgres", "eu-central-1", 12),
    "warehouse-sync": ("logistics", 9100, "kafka", "eu-west-1", 6),
    "route-planner": ("logistics", 8070, "postgres", "eu-central-1", 24),
    "metrics-gateway": ("platform", 9091, "prometheus", "eu-west-1", 24),
    "build-runner": ("platform", 8088, "object storage", "eu-central-1", 48),
    "feature-flags": ("platform", 8084, "postgres", "eu-west-1", 2),
    "support-desk": ("customer care", 8085, "postgres", "eu-central-1", 6),
    "chat-router": ("customer care", 8086, "redis", "eu-west-1", 12),
    "survey-service": ("customer care", 8087, "postgres", "eu-central-1", 24),
    "payroll-export": ("people ops", 8443, "postgres", "eu-central-1", 1),
    "badge-service": ("people ops", 8089, "postgres", "eu-west-1", 12),
    "model-registry": ("ml platform", 8092, "object storage", "eu-west-1", 6),
}


def questions_and_answers(service: str) -> list[tuple[str, str]]:
    team, port, store, region, backup = SERVICES[service]
    channel = "#" + team.replace(" ", "-") + "-oncall"
    return [
        (f"Which team owns the {service} service?", f"The {service} service is owned by the {team} team."),
        (f"Who owns {service}?", f"{service} belongs to the {team} team."),
        (f"What port does {service} listen on?", f"{service} listens on port {port}."),
        (f"On which port is {service} served?", f"{service} is served on port {port}."),
        (f"Where does {service} keep its data?", f"{service} keeps its data in {store}."),
        (f"Which datastore backs {service}?", f"{service} is backed by {store}."),
        (f"In which region does {service} run?", f"{service} runs in {region}."),
        (f"Where is {service} deployed?", f"{service} is deployed in {region}."),
        (f"How often is {service} backed up?", f"{service} is backed up every {backup} hours."),
        (f"Who do I page when {service} is down?", f"Page the {team} on-call in {channel}."),
        (f"Where is the runbook for {service}?", f"The runbook for {service} is wiki/runbooks/{service}."),
        (
            f"How do I get production access to {service}?",
            f"Request it in the access portal; the {team} lead approves access to {service}.",
        ),
    ]


def records() -> list[dict[str, list[dict[str, str]]]]:
    pairs = [pair for service in SERVICES for pair in questions_and_answers(service)]
    # Seeded: the order is shuffled, yet the same on every run.
    random.Random(20250630).shuffle(pairs)
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs
    ]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record, sort_keys=True) for record in records()]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} records in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
