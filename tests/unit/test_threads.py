"""Audit entries and Vault calls go on while asyncio's default thread pool is stuck (there,
aiohttp resolves trainers' hostnames, which blocks for as long as DNS does not answer)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sealtune.adapters.vault import VaultAdmin
from sealtune.audit import AuditLog, Event, Subject, verify
from sealtune.settings import Settings


def with_default_pool_stuck(work: Callable[[], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        loop, release = asyncio.get_running_loop(), threading.Event()
        stuck = [loop.run_in_executor(None, release.wait) for _ in range(64)]
        try:
            return await asyncio.wait_for(work(), timeout=10)
        finally:
            release.set()
            await asyncio.gather(*stuck)

    return asyncio.run(go())


def test_audit_entries_are_written_while_the_default_pool_is_stuck(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, stdout=None)
    entry = with_default_pool_stuck(lambda: log.record(Event.PLACEMENT, Subject("FineTuneJob", "j", "ns")))
    assert entry["seq"] == 1
    assert verify(path.read_text().splitlines()) == []


def test_vault_calls_are_made_while_the_default_pool_is_stuck(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("dev-token")
    admin = VaultAdmin(Settings(vault_address="http://127.0.0.1:1", vault_token_file=str(token)))
    assert with_default_pool_stuck(lambda: admin._run(lambda: "answered", "test")) == "answered"
