"""benchmarks/dynamic_batching.py: the rule that picks the default delay (on made-up curves), and quick mode end to end
(real tritonserver): structure and sanity of what it records, never timings."""

from __future__ import annotations

import pytest

from benchmarks import dynamic_batching as db
from tests.fixtures.benchmarks import run_quick


def curve(rows: dict[int, dict[int, tuple[float, float]]]) -> dict:
    """{delay: {concurrency: (inferences/s, p50 ms)}} -> a result with that curve."""
    return {"curve": {str(d): [{"concurrency": c, "inferences_per_s": q, "p50_ms": p} for c, (q, p) in by_c.items()]
                      for d, by_c in rows.items()}}


def test_rule_picks_the_smallest_delay_near_the_best_throughput_a_lone_caller_can_afford():
    result = curve({0: {1: (800, 1.0), 16: (1500, 9.0)}, 100: {1: (790, 1.1), 16: (1950, 8.0)},
                    500: {1: (600, 1.6), 16: (2000, 7.5)}, 5000: {1: (150, 6.0), 16: (2010, 7.0)}})
    chosen = db.choose_delay(result)
    assert chosen["latency_ok"] == [0, 100, 500]  # 5000 us costs a lone caller 5 ms
    assert chosen["eligible"] == [100, 500]  # 0 us serves 25% less under load
    assert chosen["delay_us"] == 100


def test_rule_never_trades_a_lone_callers_latency_for_throughput():
    result = curve({0: {1: (800, 1.0), 16: (1000, 9.0)}, 5000: {1: (150, 6.0), 16: (2000, 7.0)}})
    assert db.choose_delay(result)["delay_us"] == 0


def test_rule_weighs_every_loaded_concurrency():
    result = curve({0: {1: (800, 1.0), 4: (1200, 3.0), 16: (1350, 11.0), 64: (1100, 50.0)},
                    100: {1: (700, 1.3), 4: (1150, 3.2), 16: (1300, 11.0), 64: (1750, 36.0)}})
    chosen = db.choose_delay(result)
    assert chosen["delay_us"] == 100  # a little less at 4 and 16, much more at 64
    assert chosen["loaded_inferences_per_s"]["100"] > chosen["loaded_inferences_per_s"]["0"]


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    return run_quick(tmp_path_factory, db)


@pytest.mark.slow
def test_every_row_served_requests_and_triton_counted_them(quick_result):
    result, stored = quick_result
    assert stored is not None and stored["curve"].keys() == result["curve"].keys()
    assert [int(d) for d in result["curve"]] == list(db.QUICK_DELAYS_US)
    for rows in result["curve"].values():
        assert [r["concurrency"] for r in rows] == list(db.QUICK_CONCURRENCIES)
        for r in rows:
            assert r["requests"] > 0 and r["errors"] == 0 and r["inferences_per_s"] > 0
            assert 0 < r["p50_ms"] <= r["p99_ms"]
            assert r["triton_inferences"] >= r["requests"] and r["triton_executions"] > 0
            assert r["mean_batch"] >= 1
            assert r["queue_ms_per_request"] >= 0 and r["compute_ms_per_request"] > 0


@pytest.mark.slow
def test_a_recommended_delay_markdown_and_boolean_targets(quick_result):
    _, stored = quick_result
    assert stored["recommended"]["delay_us"] in db.QUICK_DELAYS_US
    text = db.markdown(stored)
    assert text.startswith("## ")
    assert "| max queue delay | concurrency | inferences/s | p50 | p99 | mean batch |" in text
    assert f"max_queue_delay_microseconds = {stored['recommended']['delay_us']}" in text
    (target,) = db.targets(stored)
    assert isinstance(target.met, bool) and target.name in text
