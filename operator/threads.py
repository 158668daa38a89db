"""Thread pools for the operator's blocking calls, one per kind of work.

asyncio has one default pool, and a call that blocks there holds up everything queued behind
it. aiohttp resolves trainers' hostnames in it (the progress reader): where cluster DNS does not
answer, each lookup holds a thread for the resolver's whole timeout. Audit entries and Vault
calls queued behind those lookups: at 1,000 running jobs on the local cluster, one job's status
got written per second. Work that must go on gets threads of its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

AUDIT = ThreadPoolExecutor(1, thread_name_prefix="sealtune-audit")
"""One thread: entries are appended one at a time, in order, anyway."""
VAULT = ThreadPoolExecutor(8, thread_name_prefix="sealtune-vault")
SIGNING = ThreadPoolExecutor(2, thread_name_prefix="sealtune-signing")


async def run_in(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in one of ``pool``'s threads."""
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))
