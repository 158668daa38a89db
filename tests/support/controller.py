"""A Controller for unit tests: one job in view, and none of the collaborators a test leaves out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sealtune.reconcile import Emit, Packed, Snapshot
from sealtune.settings import Settings


def one_job(key: tuple[str, str], body: Mapping[str, Any], *, kube: Any, emit: Emit) -> dict[str, Any]:
    """Controller arguments: only ``body`` in the FineTuneJobs' view, no custody, publisher or
    audit log (a test that reaches them fails on None)."""
    return {
        "settings": Settings(),
        "kube": kube,
        "emit": emit,
        "custody": None,
        "publisher": None,
        "audit": None,
        "snapshot": Snapshot(
            finetunejobs=lambda: {key: [Packed.of(body)]},
            batch_jobs=dict,
            pods=dict,
            domains=dict,
            namespaces=dict,
        ),
    }
