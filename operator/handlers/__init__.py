"""Thin kopf registrations. Importing a module registers its handlers: `indexes` always, and
`webhook` only when the operator serves admission (kopf refuses admission handlers without a
server)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """`sealtune-operator`. kopf imports the official Kubernetes client whenever it is installed
    (to recognise its objects), about 35 MB the operator never uses: it speaks HTTP through
    aiohttp and logs in through kopf's own kubeconfig and service-account handlers. Keep the
    client out of this process before kopf is imported."""
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from .main import main as run

    run(argv)
