"""The union of pairs behind FindDuplicates, the gate's choice of a match, and the recent-writes window."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from server.dedup import DuplicatePairs
from server.dedup_gate import gate
from server.errors import RpcError
from server.recent_writes import RecentWrites
from server.vector_store import Hit


def test_pairs_join_into_groups_most_connected_first():
    pairs = DuplicatePairs(max_pairs=10)
    for a, b, s in (("a", "b", 0.9), ("c", "b", 0.95), ("b", "d", 0.91), ("x", "y", 0.99), ("a", "a", 1.0),
                    ("b", "a", 0.92)):
        pairs.add(a, b, s)
    assert len(pairs) == 4  # (a, b) once, at its best score; (a, a) is no pair
    groups = pairs.groups()
    assert [g.ids for g in groups] == [["b", "a", "c", "d"], ["x", "y"]]
    assert [g.max_score for g in groups] == [pytest.approx(0.95), pytest.approx(0.99)]


def test_past_the_pair_limit_is_resource_exhausted():
    pairs = DuplicatePairs(max_pairs=2)
    pairs.add("a", "b", 0.9)
    pairs.add("b", "c", 0.9)
    with pytest.raises(RpcError) as e:
        pairs.add("c", "d", 0.9)
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "min_score" in str(e.value)


def _unit(*rows) -> np.ndarray:
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_gate_takes_the_best_match_and_never_the_item_itself():
    ids = ["new", "again", "copy-in-chunk"]
    vectors = _unit([1, 0, 0], [0, 1, 0], [0, 1, 0.01])
    stored = [[Hit("new", 1.0), Hit("old", 0.95)], [Hit("again", 1.0)], []]
    recent_ids, recent = ["fresh"], _unit([1, 0.1, 0])
    matches = gate(ids, vectors, ["flag", "reject", "skip"], stored, recent_ids, recent, bound=0.9)
    assert matches[0] is not None and matches[0].duplicate_of == "fresh"  # 0.995 beats the stored 0.95
    assert matches[1] is None  # its only neighbour is itself: idempotency by id
    assert matches[2] is not None and matches[2].duplicate_of == "again"  # written earlier in the same chunk


def test_a_skipped_item_is_no_match_for_later_ones_and_allow_is_not_checked():
    vectors = _unit([1, 0], [1, 0], [1, 0])
    matches = gate(["a", "b", "c"], vectors, ["allow", "skip", "skip"], [[], [], []], [], None, bound=0.9)
    assert matches[0] is None  # allow: never checked
    assert matches[1] is not None and matches[1].duplicate_of == "a"
    assert matches[2] is not None and matches[2].duplicate_of == "a"  # "b" was skipped, not written


def test_recent_writes_expire_and_forget_deleted_ids():
    recent = RecentWrites(window_s=1.0, max_items=3)  # wide enough for a loaded machine between add and snapshot
    recent.add("m", ["a", "b"], _unit([1, 0], [0, 1]))
    recent.forget("m", ["a"])
    assert recent.snapshot("m")[0] == ["b"]
    recent.add("m", ["c", "d"], _unit([1, 1], [1, 0]))
    assert recent.snapshot("m")[0] == ["c", "d"]  # over max_items: the oldest write went
    time.sleep(1.05)
    assert recent.snapshot("m") == ([], None)
