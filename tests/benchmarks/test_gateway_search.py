"""benchmarks/gateway_search.py quick mode end to end (real Triton, Milvus and gateway): structure and sanity of
what it records, never timings."""

from __future__ import annotations

import pytest

from benchmarks import gateway_search
from tests.fixtures.benchmarks import run_quick

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    return run_quick(tmp_path_factory, gateway_search, seconds=2.0)


def test_every_row_served_queries_without_errors(quick_result):
    result, stored = quick_result
    assert stored is not None and stored["model"] == result["model"]
    rows = result["gateway"] + result["direct"] + [result["paced"]]
    assert [r["concurrency"] for r in result["gateway"]] == [1, gateway_search.HEADLINE_CONCURRENCY]
    for r in rows:
        assert r["requests"] > 0 and r["errors"] == 0 and r["qps"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert set(r["cpu_ms_per_query"]) >= {"client", "triton", "milvus"}
        assert r["triton_inferences"] >= r["requests"]  # every served query was embedded by Triton
    assert result["paced"]["offered_qps"] == gateway_search.HEADLINE_QPS


def test_the_gateway_reports_its_stages_and_batches_under_concurrency(quick_result):
    result, _ = quick_result
    c1, c16 = result["gateway"]
    for r in (c1, c16):
        assert r["decode_p50_ms"] > 0 and r["embed_p50_ms"] > 0 and r["search_p50_ms"] > 0
        assert r["gateway_total_p50_ms"] >= r["search_p50_ms"]
    assert "gateway" in c1["cpu_ms_per_query"]
    assert c1["triton_mean_batch"] == pytest.approx(1.0)  # one caller: nothing to coalesce
    assert c16["triton_mean_batch"] > 1.0  # 16 callers: queries share Triton calls


def test_markdown_and_targets_come_from_the_result(quick_result):
    result, _ = quick_result
    md = gateway_search.markdown(result)
    assert md.startswith("## Search by image through the gateway")
    assert "| gateway, closed | 16 |" in md and "| direct script, closed | 1 |" in md and "paced" in md
    names = [t.name for t in gateway_search.targets(result)]
    assert any("overhead" in n for n in names) and any("offered" in n for n in names)
    for t in gateway_search.targets(result):
        assert isinstance(t.met, bool) and t.measured
