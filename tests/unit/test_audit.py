"""The hash-chained audit log: what ``AuditLog`` writes verifies, every kind of tampering is
found at its line and sequence number by ``verify`` and by ``sealtune audit verify``, a restart
continues the chain, and a broken or shrunk file is refused rather than appended to."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sealtune import audit, cli

pytestmark = pytest.mark.unit

JOB = {"kind": "FineTuneJob", "metadata": {"name": "tune", "namespace": "team-a", "uid": "u-1"}}
SUBJECT = audit.Subject.of(JOB)


def record(log: audit.AuditLog, count: int, start: int = 0) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        await log.start()
        return [
            await log.record(audit.Event.DELETION, SUBJECT, {"target": "checkpoints", "n": start + i})
            for i in range(count)
        ]

    return asyncio.run(run())


def write(path: Path, count: int) -> list[str]:
    record(audit.AuditLog(path, stdout=None), count)
    return path.read_text().splitlines()


@functools.cache
def six_lines() -> tuple[str, ...]:
    out = io.StringIO()
    record(audit.AuditLog(None, stdout=out), 6)
    return tuple(out.getvalue().splitlines())


def rehashed(line: str, **changes: Any) -> str:
    """``line`` changed and given a hash that matches: what a careful forger writes."""
    entry = {**json.loads(line), **changes}
    entry["hash"] = audit.entry_hash(entry)
    return audit.canonical(entry)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dirs" / "audit.jsonl"
    out = io.StringIO()
    entries = record(audit.AuditLog(path, stdout=out), 4)

    lines = path.read_text().splitlines()
    assert out.getvalue().splitlines() == lines
    assert [json.loads(line) for line in lines] == entries
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert [e["prev"] for e in entries] == [audit.GENESIS] + [e["hash"] for e in entries[:-1]]
    assert entries[0]["subject"] == {
        "kind": "FineTuneJob",
        "name": "tune",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert entries[0]["event"] == "Deletion" and entries[2]["details"] == {"target": "checkpoints", "n": 2}
    assert audit.verify(lines) == []
    assert audit.scan(lines) == audit.Scan([], 4, entries[-1]["hash"])


def test_an_empty_log_verifies() -> None:
    assert audit.scan([]) == audit.Scan([], 0, audit.GENESIS)


def _edited(lines: list[str]) -> list[str]:
    entry = json.loads(lines[2])
    entry["details"]["target"] = "nothing"
    return [*lines[:2], audit.canonical(entry), *lines[3:]]


TAMPERING: dict[str, tuple[Any, list[tuple[int, int | None, str]]]] = {
    # name: (change to six lines, [(line, seq, kind)] expected)
    "edited": (_edited, [(3, 3, "edited")]),
    "edited and rehashed": (
        lambda ls: [*ls[:2], rehashed(ls[2], details={}), *ls[3:]],
        [(4, 4, "unchained")],
    ),
    "respaced": (lambda ls: [*ls[:2], ls[2].replace(",", ", ", 1), *ls[3:]], [(3, 3, "edited")]),
    "removed": (lambda ls: [*ls[:2], *ls[3:]], [(3, 4, "removed")]),
    "first removed": (lambda ls: ls[1:], [(1, 2, "removed")]),
    "two removed": (lambda ls: [ls[0], *ls[3:]], [(2, 4, "removed")]),
    "swapped": (lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], [(4, 3, "reordered")]),
    "inserted": (
        lambda ls: [*ls[:3], rehashed(ls[2], seq=4, prev=json.loads(ls[2])["hash"]), *ls[3:]],
        [(5, 4, "duplicate")],
    ),
    "copied": (lambda ls: [*ls, ls[1]], [(7, 2, "duplicate")]),
    "garbled": (lambda ls: [*ls[:2], "{not json", *ls[3:]], [(3, None, "malformed")]),
    "renumbered": (
        lambda ls: [*ls[:2], *(rehashed(line, seq=json.loads(line)["seq"] - 1) for line in ls[3:])],
        [(3, 3, "unchained"), (4, 4, "unchained"), (5, 5, "unchained")],
    ),
}


@pytest.mark.parametrize("name", TAMPERING)
def test_verify_names_each_tampering(name: str) -> None:
    change, expected = TAMPERING[name]
    problems = audit.verify(change(list(six_lines())))
    assert [(p.line, p.seq, p.kind) for p in problems] == expected


@pytest.mark.parametrize("name", TAMPERING)
def test_the_cli_names_each_tampering(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, expected = TAMPERING[name]
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(change(list(six_lines()))) + "\n")

    code, out = run_cli(capsys, "audit", "verify", path)
    assert code == cli.EXIT_FAILED
    for line, seq, _ in expected:
        assert f"line {line} ({'seq unknown' if seq is None else f'seq {seq}'}): " in out
    assert out.rstrip().endswith("verification FAILED")

    code, out = run_cli(capsys, "audit", "verify", path, "-o", "json")
    document = json.loads(out)
    assert code == document["exitCode"] == cli.EXIT_FAILED
    assert document["intact"] is False
    assert [(p["line"], p["seq"], p["kind"]) for p in document["problems"]] == expected


def test_the_cli_passes_an_intact_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write(path, 3)
    head = json.loads(lines[-1])["hash"]

    code, out = run_cli(capsys, "audit", "verify", path)
    assert code == cli.EXIT_OK
    assert out.strip() == f"{path}: 3 entries, chain intact, last hash {head}"

    code, out = run_cli(capsys, "audit", "verify", path, "--output", "json")
    assert code == cli.EXIT_OK
    assert json.loads(out) == {
        "file": str(path),
        "intact": True,
        "entries": 3,
        "problems": [],
        "lastHash": head,
        "exitCode": 0,
    }


def test_the_cli_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "verify", str(tmp_path / "nothing.jsonl")]) == cli.EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_a_cut_short_last_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 2)
    path.write_bytes(path.read_bytes()[:-1])  # the newline only: the entry itself is intact
    problems = audit.scan_file(path).problems
    assert [(p.line, p.kind) for p in problems] == [(2, "malformed")]
    assert "no newline at the end" in problems[0].message


def test_a_stray_carriage_return_is_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 2)
    path.write_text(path.read_text().replace("\n", "\r\n", 1), newline="")
    assert [(p.line, p.kind) for p in audit.scan_file(path).problems] == [(1, "edited")]


def test_a_file_is_checked_a_line_at_a_time(tmp_path: Path) -> None:
    """A log grows for as long as the cluster lives; checking it at start must not hold it
    in memory (an operator of 5,000 jobs once spent more on its log than on its jobs)."""
    out = io.StringIO()
    entries = record(audit.AuditLog(None, stdout=out), 10_000)
    path = tmp_path / "audit.jsonl"
    path.write_text(out.getvalue())
    tracemalloc.start()
    try:
        assert audit.scan_file(path) == audit.Scan([], 10_000, entries[-1]["hash"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size / 20


def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = record(audit.AuditLog(path, stdout=None), 3)
    second = record(audit.AuditLog(path, stdout=None), 2, start=3)
    assert second[0]["seq"] == 4 and second[0]["prev"] == first[-1]["hash"]
    assert audit.scan_file(path) == audit.Scan([], 5, second[-1]["hash"])


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    one, two = audit.AuditLog(path, stdout=None), audit.AuditLog(path, stdout=None)
    for _ in range(3):
        record(one, 1)
        record(two, 1)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert audit.verify(lines) == []


def test_a_broken_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write(path, 6)
    path.write_text("\n".join([*lines[:2], *lines[3:]]) + "\n")
    before = path.read_bytes()
    log = audit.AuditLog(path, stdout=None)
    with pytest.raises(audit.AuditError, match=r"does not verify: line 3 \(seq 4\): sequence gap"):
        asyncio.run(log.start())
    with pytest.raises(audit.AuditError, match="refusing to append"):
        record(audit.AuditLog(path, stdout=None), 1)
    assert path.read_bytes() == before


def test_a_file_that_shrinks_while_running_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = audit.AuditLog(path, stdout=None)
    record(log, 3)
    # The last entry, removed: the rest still verifies, so only the size shows it.
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(audit.AuditError, match="shrank"):
        record(log, 1)


def test_a_failed_write_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    out = io.StringIO()
    log = audit.AuditLog(path, stdout=out)
    record(log, 2)
    before, printed = path.read_bytes(), out.getvalue()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full)
        with pytest.raises(audit.AuditError, match="No space left"):
            record(log, 1)
    assert path.read_bytes() == before and out.getvalue() == printed

    [entry] = record(log, 1)
    assert entry["seq"] == 3
    assert audit.verify(path.read_text().splitlines()) == []


def test_stdout_only() -> None:
    out = io.StringIO()
    entries = record(audit.AuditLog(None, stdout=out), 2)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == entries
    with pytest.raises(ValueError, match="needs a file, stdout or both"):
        audit.AuditLog(None, stdout=None)


def test_concurrent_records_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = audit.AuditLog(path, stdout=None)

    async def run() -> None:
        await asyncio.gather(*(log.record(audit.Event.PLACEMENT, SUBJECT, {"i": i}) for i in range(20)))

    asyncio.run(run())
    assert audit.scan_file(path).entries == 20
    assert audit.verify(path.read_text().splitlines()) == []


@given(
    line=st.integers(0, 5),
    position=st.integers(0, 400),
    op=st.sampled_from(["replace", "insert", "delete"]),
    char=st.characters(codec="utf-8"),
)
def test_any_change_to_one_line_is_found_at_that_line(line: int, position: int, op: str, char: str) -> None:
    lines = list(six_lines())
    text = lines[line]
    at = position % len(text)
    lines[line] = {
        "replace": text[:at] + char + text[at + 1 :],
        "insert": text[:at] + char + text[at:],
        "delete": text[:at] + text[at + 1 :],
    }[op]
    assume(lines[line] != text)
    assert line + 1 in {p.line for p in audit.verify(lines)}


@given(data=st.data())
def test_any_removal_but_the_last_or_reordering_or_copy_is_found(data: st.DataObject) -> None:
    lines = list(six_lines())
    i = data.draw(st.integers(0, 5))
    j = data.draw(st.integers(0, 5).filter(lambda j: j != i))
    change = data.draw(st.sampled_from(["remove", "swap", "copy"]))
    if change == "remove":
        assume(i != 5)  # entries cut from the end leave no trace in the file (see the module doc)
        del lines[i]
    elif change == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines.insert(j, lines[i])
    assert audit.verify(lines)
