"""benchmarks/explain quick mode end to end (real exports, Triton, Milvus and gateway): structure and sanity, no
timings asserted."""

from __future__ import annotations

import pytest

from benchmarks import explain
from benchmarks.explain.benchmark import BATCHES, VARIANTS
from tests.fixtures.benchmarks import run_quick

pytestmark = pytest.mark.slow


def test_quick_run_measures_both_graphs_and_every_search_variant(tmp_path_factory):
    result, stored = run_quick(tmp_path_factory, explain)
    assert stored is not None and stored["quick"]
    for model in result["models"]:
        graph = result["graph"][model]
        assert set(graph) == {str(b) for b in BATCHES}
        for row in graph.values():
            assert row["plain_vs_bare"] > 0 and row["explain_vs_bare"] > 0
            assert all(row[k]["calls"] >= 3 for k in ("bare", "served_plain", "served_explain"))
        assert set(result["search"][model]) == set(VARIANTS)
        assert all(v["p50_ms"] > 0 for v in result["search"][model].values())
    (target,) = explain.targets(result)
    assert "bare embedding export" in target.target
    assert "Why-similar" in explain.markdown(stored)
