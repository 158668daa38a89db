"""The operator's audit log: append-only JSON lines, each carrying the hash of the one before.

An entry is one line, the canonical JSON (sorted keys, no spaces, ASCII) of::

    {"seq": 7, "time": "2025-01-01T00:00:00.000Z", "event": "Deletion",
     "subject": {"kind": "FineTuneJob", "namespace": "team-a", "name": "tune", "uid": "..."},
     "details": {...}, "prev": "sha256:<hash of entry 6>", "hash": "sha256:<hash of this entry>"}

``hash`` is the sha256 of the entry's canonical JSON without ``hash``; ``prev`` is the hash of
the entry before it, or ``GENESIS`` for the first. Details hold names, digests and decisions,
never secret values: the log is read by admins and shipped to log stores.

``AuditLog`` writes entries to a file (on a PVC by default), JSON lines on stdout for log
shippers, or both. ``verify`` finds every edited, removed, inserted or reordered entry and
names its line and sequence number. One thing a chain cannot show by itself is entries cut
from the end: compare the last hash with a copy kept elsewhere (the stdout stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TextIO

from sealtune_trainer.checkpoints import fsync_dir

from . import threads

DEFAULT_PATH = Path("/var/lib/sealtune/audit/audit.jsonl")
GENESIS = "sha256:" + "0" * 64
"""The ``prev`` of the first entry."""

_FIELDS: dict[str, type] = {
    "seq": int,
    "time": str,
    "event": str,
    "subject": dict,
    "details": dict,
    "prev": str,
    "hash": str,
}


class Event(StrEnum):
    """What an entry records."""

    POLICY_DECISION = "PolicyDecision"
    VAULT_ROLE_CREATED = "VaultRoleCreated"
    VAULT_ROLE_REVOKED = "VaultRoleRevoked"
    PLACEMENT = "Placement"
    ARTIFACT_PUBLISHED = "ArtifactPublished"
    APPROVAL = "Approval"
    REVOCATION = "Revocation"
    DELETION = "Deletion"
    RELEASE = "Release"


@dataclass(frozen=True)
class Subject:
    """The object an entry is about."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Subject:
        """The subject for a Kubernetes object as the API server returns it."""
        meta = obj.get("metadata", {})
        return cls(str(obj["kind"]), str(meta["name"]), meta.get("namespace"), meta.get("uid"))

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


Kind = Literal["malformed", "edited", "removed", "reordered", "duplicate", "unchained"]


@dataclass(frozen=True)
class Problem:
    """One way the log differs from what ``AuditLog`` wrote, at a line (1-based) and, when the
    line says, a sequence number."""

    line: int
    seq: int | None
    kind: Kind
    message: str

    def __str__(self) -> str:
        seq = f"seq {self.seq}" if self.seq is not None else "seq unknown"
        return f"line {self.line} ({seq}): {self.message}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scan:
    """A whole log checked: its problems, its number of lines, and its last entry's hash."""

    problems: list[Problem]
    entries: int
    head: str


def canonical(obj: Mapping[str, Any]) -> str:
    """The one serialisation hashes are computed over (and lines are written in)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def entry_hash(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical(body).encode()).hexdigest()


def verify(lines: Iterable[str]) -> list[Problem]:
    """Every problem in a log's lines (with or without their newlines); none for an intact log."""
    return scan(lines).problems


def scan(lines: Iterable[str]) -> Scan:
    """``verify``, plus what a writer needs to continue the chain."""
    problems: list[Problem] = []
    gaps: list[tuple[int, int, int, int]] = []  # missing seqs lo..hi, first seen missing at (line, seq)
    top = 0  # the highest seq so far
    before: tuple[int, str] | None = None  # the previous line's seq and hash, if it was an entry
    head, number = GENESIS, 0
    for number, raw in enumerate(lines, 1):
        seq, entry, wrong = _check_line(raw.removesuffix("\n"))
        if seq is None:
            # A line garbled beyond reading most likely stands where the next entry was.
            seq = top + 1
            problems.append(Problem(number, None, "malformed", wrong or ""))
        elif entry is None or wrong:
            problems.append(Problem(number, seq, "malformed" if entry is None else "edited", wrong or ""))
        if seq > top + 1:
            gaps.append((top + 1, seq - 1, number, seq))
        elif seq <= top:
            jumped = _fill(gaps, seq)
            if jumped is None:
                message = "duplicate: seq seen earlier: this entry, or one before it, was inserted or copied"
                problems.append(Problem(number, seq, "duplicate", message))
            else:
                message = f"out of order: after seq {top}, but it belongs before line {jumped}: reordered"
                problems.append(Problem(number, seq, "reordered", message))
        top = max(top, seq)
        if entry is not None:
            expected = GENESIS if seq == 1 else before[1] if before and before[0] == seq - 1 else None
            if expected is not None and entry["prev"] != expected:
                link = "the genesis value" if seq == 1 else f"the hash of line {number - 1}"
                message = (
                    f"prev mismatch: prev is not {link}: that entry was edited and rehashed, "
                    "or this one was inserted"
                )
                problems.append(Problem(number, seq, "unchained", message))
            before, head = (seq, entry["hash"]), entry["hash"]
        else:
            before = None
    for lo, hi, line, seq in gaps:
        missing = f"seq {lo}" if lo == hi else f"seqs {lo} to {hi}"
        problems.append(
            Problem(line, seq, "removed", f"sequence gap: {missing} missing before this entry: removed")
        )
    problems.sort(key=lambda p: p.line)
    return Scan(problems, number, head)


def _check_line(text: str) -> tuple[int | None, dict[str, Any] | None, str | None]:
    """The line's seq if it states one, the entry if it is well-formed, and what is wrong."""
    try:
        entry = json.loads(text)
    except ValueError:
        return None, None, "not JSON: an entry was garbled, cut short or inserted"
    if not isinstance(entry, dict):
        return None, None, "not an audit entry: a JSON value other than an object"
    seq = entry.get("seq")
    # bool is an int to Python, not to a reader of the log.
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None, None, "not an audit entry: no sequence number"
    if set(entry) != set(_FIELDS) or not all(isinstance(entry[k], t) for k, t in _FIELDS.items()):
        return seq, None, f"not an audit entry: its fields are not exactly {', '.join(_FIELDS)}"
    # Compared as text, so that a change the JSON parser forgives (spacing, key order, escapes)
    # is still a change.
    if canonical(entry) != text:
        return seq, entry, "hash mismatch: the line is not the exact canonical text its hash covers: edited"
    if entry["hash"] != entry_hash(entry):
        return seq, entry, "hash mismatch: the entry was edited"
    return seq, entry, None


def _fill(gaps: list[tuple[int, int, int, int]], seq: int) -> int | None:
    """Takes ``seq`` out of the gaps and returns the line where it went missing, if it did."""
    for i, (lo, hi, line, at) in enumerate(gaps):
        if lo <= seq <= hi:
            gaps[i : i + 1] = [g for g in ((lo, seq - 1, line, at), (seq + 1, hi, line, at)) if g[0] <= g[1]]
            return line
    return None


def scan_file(path: Path) -> Scan:
    """``scan`` of a log file, read a line at a time: the log grows for as long as the cluster
    lives, the memory of the operator that checks it at start must not. Bytes that are not
    UTF-8 make their line fail, not the read."""
    torn = False

    def lines() -> Iterator[str]:
        nonlocal torn
        # Read as bytes, where only "\n" ends a line: a stray "\r" is an edit inside one.
        with path.open("rb") as file:
            for raw in file:
                torn = not raw.endswith(b"\n")
                yield raw.decode("utf-8", errors="replace")

    result = scan(lines())
    if torn and not any(p.line == result.entries for p in result.problems):
        problem = Problem(
            result.entries, None, "malformed", "no newline at the end: the last write was cut short"
        )
        result.problems.append(problem)
    return result


class AuditError(RuntimeError):
    """The log cannot be appended to: its chain does not verify, or the write failed."""


class AuditLog:
    """Appends entries to ``path`` (``None``: no file) and as JSON lines to ``stdout`` (``None``:
    not there); nothing is written until ``start`` or the first ``record``.

    Before it writes, it checks the file under an exclusive lock: a file whose chain does not
    verify, or that shrank since this process wrote it, is refused. So a second writer (another
    replica taking over on the same volume) continues the chain instead of forking it. Every
    entry is fsynced before it is printed or returned. Without a file, the chain starts anew
    with each process.
    """

    def __init__(self, path: Path | None = DEFAULT_PATH, *, stdout: TextIO | None = sys.stdout) -> None:
        if path is None and stdout is None:
            raise ValueError("an audit log needs a file, stdout or both")
        self._path = path
        self._stdout = stdout
        self._lock = asyncio.Lock()
        self._seq, self._head = 0, GENESIS
        self._size: int | None = None
        """The file's size after this process last read or wrote it; None before the first."""

    async def start(self) -> None:
        """Creates the file and its directories and checks the chain, so that a broken log
        stops the operator when it starts rather than at its first entry."""
        if self._path is not None:
            async with self._lock:
                await threads.run_in(threads.AUDIT, self._locked, self._path, None)

    async def record(
        self, event: Event, subject: Subject, details: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Appends one entry and returns it. Raises ``AuditError`` when the file is refused or
        cannot be written; then nothing was appended."""
        entry: dict[str, Any] = {
            "event": str(event),
            "subject": subject.to_json(),
            "details": dict(details or {}),
        }
        async with self._lock:
            if self._path is None:
                self._commit(entry, self._next(entry))
            else:
                await threads.run_in(threads.AUDIT, self._locked, self._path, entry)
        return entry

    def _locked(self, path: Path, entry: dict[str, Any] | None) -> None:
        """Under the file lock: checks the file if it changed, then appends ``entry`` if given."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size != self._size:
                self._load(path, size)
            if entry is not None:
                line = self._next(entry)
                _write(fd, line, size)
                if size == 0:
                    fsync_dir(path.parent)
                self._size = size + len(line)
                self._commit(entry, line)
        finally:
            os.close(fd)  # and with it the lock

    def _load(self, path: Path, size: int) -> None:
        if self._size is not None and size < self._size:
            raise AuditError(
                f"refusing to append to {path}: it shrank from {self._size} to {size} bytes "
                "while the operator ran: entries were removed"
            )
        result = scan_file(path)
        if result.problems:
            shown = "; ".join(str(p) for p in result.problems[:5])
            more = f" and {len(result.problems) - 5} more" if len(result.problems) > 5 else ""
            raise AuditError(
                f"refusing to append to {path}: its chain does not verify: {shown}{more} "
                f"(sealtune audit verify {path} lists every problem)"
            )
        self._seq, self._head, self._size = result.entries, result.head, size

    def _next(self, entry: dict[str, Any]) -> bytes:
        """Chains ``entry`` to the last one and returns its line."""
        entry.update(seq=self._seq + 1, time=_now(), prev=self._head)
        entry["hash"] = entry_hash(entry)
        return (canonical(entry) + "\n").encode()

    def _commit(self, entry: dict[str, Any], line: bytes) -> None:
        self._seq, self._head = entry["seq"], entry["hash"]
        if self._stdout is not None:
            self._stdout.write(line.decode())
            self._stdout.flush()


def _write(fd: int, line: bytes, size: int) -> None:
    """Appends and fsyncs ``line``; on failure cuts the file back to ``size``, because a torn
    line would make the next start refuse the whole log."""
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise AuditError(f"cannot write the audit log: {exc}") from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
