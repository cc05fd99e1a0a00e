"""benchmarks/open_loop quick mode end to end (real Triton, Milvus and gateway): structure and sanity of what it
records, never timings."""

from __future__ import annotations

import math

import pytest

from benchmarks import common, open_loop
from benchmarks.open_loop.arrivals import StepResult
from tests.fixtures.benchmarks import run_quick

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    committed = {p: p.read_bytes() for p in common.RESULTS.glob("open_loop*")}
    result, stored = run_quick(tmp_path_factory, open_loop, seconds=1.5)
    (folder,) = {p.resolve().parent for p in tmp_path_factory.getbasetemp().glob(f"bench-results*/{result['plot']}")}
    assert committed and {p: p.read_bytes() for p in common.RESULTS.glob("open_loop*")} == committed  # untouched
    return result, stored, folder


def test_every_step_offered_its_rate_and_served_it(quick_result):
    result, stored, _ = quick_result
    assert stored is not None and stored["fmnist"]["model"] == result["fmnist"]["model"]
    for key in ("fmnist", "photos"):
        rows = result[key]["rows"]
        assert [r["offered_qps"] for r in rows] == sorted(r["offered_qps"] for r in rows)
        for r in rows:
            assert r["sent"] > 0 and r["ok"] == r["sent"], r["failed"]  # far under capacity: all served
            assert 0 < r["p50_ms"] <= r["p99_ms"] < math.inf
            assert set(r["cpu_ms_per_query"]) >= {"client", "gateway", "triton", "milvus"}
            assert r["cpu_ms_per_query"]["gateway"] > 0
        assert result[key]["best_rate"] == open_loop.benchmark.best_rate(rows)
    for variant in result["variants"].values():  # a tuning candidate, measured in the same run
        assert variant["rows"] and all(r["ok"] == r["sent"] > 0 for r in variant["rows"])


def test_photo_indexing_and_onnxruntime_alone_were_measured(quick_result):
    result, _, _ = quick_result
    assert result["photo_indexing"]["errors"] == 0
    assert result["photo_indexing"]["upserted"] == result["photo_indexing"]["images"] == result["photos"]["indexed"]
    assert result["photo_indexing"]["images_per_s"] > 0 and result["onnxruntime_alone"]["images_per_s"] > 0


def test_the_curve_png_and_the_section_come_from_the_result(quick_result):
    result, _, folder = quick_result
    png = folder / result["plot"]
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 300_000
    md = open_loop.markdown(result)
    assert md.startswith("## Throughput at a latency objective")
    assert f"![latency against offered rate](benchmarks/results/{result['plot']})" in md  # from the root report
    assert all(label in md for label in result["variants"])
    for t in open_loop.targets(result):
        assert isinstance(t.met, bool) and t.measured


def test_unserved_calls_count_as_infinitely_late():
    step = StepResult(100.0, 1.0, sent=100, ok=97, statuses={"RESOURCE_EXHAUSTED": 3},
                      latencies_ms=[float(i) for i in range(1, 98)])
    row = step.row()
    assert row["p99_ms"] == math.inf and row["ok_p99_ms"] < 100
    assert open_loop.benchmark.best_rate([row]) is None
