"""benchmarks/dedup: the pair scoring on a hand-computed case, and the quick mode end to end (real Triton, Milvus
and gateway): structure and sanity, no timings asserted."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks import dedup
from benchmarks.dedup.collection import INJECTED_LEVELS, Collection, inject
from benchmarks.dedup.scoring import labels_from_groups, score
from tests.fixtures.benchmarks import run_quick


def _collection() -> Collection:
    # items 0-3 originals; 4 = copy of 0 (level a), 5 = copy of 0 (level b), 6 = copy of 1 (level a)
    ids = [f"o{i}" for i in range(4)] + ["c0a", "c0b", "c1a"]
    return Collection("t", ids, [], np.array([0, 1, 2, 3, 0, 0, 1]), ["", "", "", "", "a", "b", "a"])


def test_pairs_are_scored_from_group_sizes():
    c = _collection()
    # groups {o0, c0a, o2} and {o1, c1a, o3, c0b}: true pairs in them: (o0, c0a), (o1, c1a) = 2 of the 4 true pairs
    # (o0-c0a, o0-c0b, c0a-c0b, o1-c1a).
    labels = labels_from_groups(c, [["o0", "c0a", "o2"], ["o1", "c1a", "o3", "c0b"]])
    s = score(c, labels)
    # group 1: 3 pairs, originals o0, o2 -> 1 unlabelled pair, 2 labelled; group 2: 6 pairs, originals o1, o3 -> 1
    # unlabelled, 5 labelled. Labelled 7, true 2.
    assert (s["labelled_pairs"], s["unlabelled_pairs"], s["true_positive_pairs"]) == (7, 2, 2)
    assert s["precision"] == pytest.approx(2 / 7, abs=1e-4) and s["recall"] == pytest.approx(0.5)
    assert s["copy_recall_by_level"] == {"a": 1.0, "b": 0.0}
    assert (s["groups"], s["largest_group"]) == (2, 4)


def test_perfect_groups_score_one():
    c = _collection()
    s = score(c, labels_from_groups(c, [["o0", "c0a", "c0b"], ["o1", "c1a"]]))
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)


def test_inject_spreads_copies_over_the_levels():
    images = [Image.new("L", (28, 28), i) for i in range(50)]
    c = inject("t", [f"i{i}" for i in range(50)], images, len(INJECTED_LEVELS) + 2)
    copies = [lv for lv in c.level if lv]
    assert len(copies) == len(INJECTED_LEVELS) + 2 and set(copies) == set(INJECTED_LEVELS)
    assert all(c.family[k] < 50 and not c.level[c.family[k]] for k in range(50, len(c.ids)))


@pytest.mark.slow
def test_quick_run_finds_copies_and_compares_with_hashes(tmp_path_factory):
    result, stored = run_quick(tmp_path_factory, dedup)
    assert stored is not None and stored["quick"]
    for name in ("fashion_mnist", "photos"):
        s = result["sets"][name]
        fd = s["find_duplicates"]
        assert s["copies"] > 0 and fd["wall_s"] > 0 and 0 <= fd["precision"] <= 1 and 0 < fd["recall"] <= 1
        assert set(s["hashes"]) == {"phash", "dhash"}
        assert fd["items_scanned"] == s["items"]
        for h in s["hashes"].values():
            rows = [r for r in h["thresholds"] if "recall" in r]
            assert rows[0]["hamming"] == 0 and rows[-1]["recall"] > 0  # a loose threshold finds some copies
            assert [r["recall"] for r in rows] == sorted(r["recall"] for r in rows)  # looser never finds fewer
    assert result["gate"]["flagged"] == result["gate"]["items"]  # every FLAG item duplicates an ALLOW one
    assert result["gate"]["allow_ms_per_item"] > 0
    assert "FindDuplicates" in dedup.markdown(stored)
