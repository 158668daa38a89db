"""The informer's store, fed events directly: objects grouped by their job's label, a relabel
moving an object between jobs, a deletion emptying a job's group, and the callback told of
each group that changed; without a label, each object a group of its own.
(tests/integration/test_informer.py runs it against the API server.)"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sealtune.adapters.informer import Informer
from sealtune.names import LABEL_JOB


def obj(name: str, job: str, value: int, namespace: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": {LABEL_JOB: job}}, "v": value}


def informer(events: list[tuple[str, tuple[str, str]]], label: str | None = LABEL_JOB) -> Informer[int]:
    return Informer(
        None,  # type: ignore[arg-type]
        "Pod",
        label=label,
        transform=lambda o: o["v"],
        on_event=lambda type, group: events.append((type, group)),
    )


def test_objects_group_by_job_and_move_when_relabelled() -> None:
    events: list[tuple[str, tuple[str, str]]] = []
    inf = informer(events)
    inf.apply("ADDED", obj("p0", "a", 1))
    inf.apply("ADDED", obj("p1", "a", 2))
    inf.apply("ADDED", obj("p0", "b", 1, namespace="other"))
    assert dict(inf.groups) == {("ns", "a"): (1, 2), ("other", "b"): (1,)}
    inf.apply("MODIFIED", obj("p1", "c", 3))
    assert dict(inf.groups) == {("ns", "a"): (1,), ("ns", "c"): (3,), ("other", "b"): (1,)}
    assert events[-2:] == [("DELETED", ("ns", "a")), ("MODIFIED", ("ns", "c"))]
    inf.apply("DELETED", obj("p0", "a", 1))
    assert ("ns", "a") not in inf.groups
    inf.apply("DELETED", obj("gone-before-seen", "a", 1))  # unknown: no change, no callback
    assert events[-1] == ("DELETED", ("ns", "a")) and len(events) == 6


def test_without_a_label_each_object_is_its_own_group() -> None:
    events: list[tuple[str, tuple[str, str]]] = []
    inf = informer(events, label=None)
    inf.apply("ADDED", obj("j0", "ignored", 1))
    inf.apply("ADDED", obj("j1", "ignored", 2))
    inf.apply("MODIFIED", obj("j0", "other", 3))
    assert dict(inf.groups) == {("ns", "j0"): (3,), ("ns", "j1"): (2,)}
    inf.apply("DELETED", obj("j1", "ignored", 2))
    assert dict(inf.groups) == {("ns", "j0"): (3,)}
    assert events == [
        ("ADDED", ("ns", "j0")),
        ("ADDED", ("ns", "j1")),
        ("MODIFIED", ("ns", "j0")),
        ("DELETED", ("ns", "j1")),
    ]


operations = st.lists(
    st.tuples(
        st.sampled_from(["ADDED", "MODIFIED", "DELETED"]),
        st.sampled_from(["p0", "p1", "p2"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 9),
    ),
    max_size=40,
)


@given(operations)
def test_the_store_always_equals_the_last_state_of_each_object(ops: list[tuple[str, str, str, int]]) -> None:
    inf = informer([])
    latest: dict[str, tuple[str, int]] = {}
    for type, name, job, value in ops:
        inf.apply(type, obj(name, job, value))
        if type == "DELETED":
            latest.pop(name, None)
        else:
            latest[name] = (job, value)
    expected: dict[tuple[str, str], list[int]] = {}
    for job, value in latest.values():
        expected.setdefault(("ns", job), []).append(value)
    assert {k: sorted(v) for k, v in inf.groups.items()} == {k: sorted(v) for k, v in expected.items()}
