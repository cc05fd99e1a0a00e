"""benchmarks/embedding.py quick mode end to end (real tritonserver): structure and sanity of what it records,
never timings."""

from __future__ import annotations

import pytest

from benchmarks import embedding
from export.parity import MIN_COSINE
from tests.fixtures.benchmarks import run_quick

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    return run_quick(tmp_path_factory, embedding)


def test_every_model_has_every_path_at_every_batch(quick_result):
    result, stored = quick_result
    assert stored is not None and stored["models"].keys() == result["models"].keys() == set(embedding.QUICK_MODELS)
    assert result["quick"] is True and result["sgemm"]["gflops"] > 0
    for m in result["models"].values():
        assert {(r["batch"], r["method"]) for r in m["rows"]} == \
            {(b, method) for b in embedding.BATCHES for method in embedding.METHODS}


def test_throughputs_flops_and_fractions_of_peak_are_sane(quick_result):
    result, _ = quick_result
    for m in result["models"].values():
        assert m["gflops_per_image"] > 0
        for r in m["rows"]:
            assert r["images_per_s"] > 0 and r["images_per_s_p50"] > 0 and r["calls"] >= 2
            assert 0 < r["best_ms"] <= r["p50_ms"]
            assert r["gflops_per_s"] > 0
            assert 0 < r["fraction_of_peak"] < 1.5
        assert set(m["ort_vs_torch"]) == {str(b) for b in embedding.BATCHES}
        assert all(v > 0 for v in m["ort_vs_torch"].values())


def test_the_tuned_session_and_triton_compute_torchs_embedding(quick_result):
    result, _ = quick_result
    for m in result["models"].values():
        for path in ("onnxruntime", "triton"):
            assert m["parity"][path]["min_cosine"] >= MIN_COSINE, (path, m["parity"])
        options = m["onnxruntime_options"]
        assert set(options["chosen"]) == {"fuse_attention", "allow_spinning", "max_batch_pixels", "io_binding"}
        assert options["stages"] and all(len(s["candidates"]) >= 2 for s in options["stages"])
        assert options["session_create_s"]["from_onnx"] > 0
        for path in ("torch", "onnxruntime"):
            assert m["profile"][path]["wall_ms"] > 0 and m["profile"][path]["flop_ops_ms"] > 0


def test_markdown_has_the_tables_and_targets_are_booleans(quick_result):
    _, stored = quick_result
    text = embedding.markdown(stored)
    assert text.startswith("## ")
    assert "| model | GFLOP/image | batch | path | images/s |" in text
    assert "| dino_vit_femto_p7_fmnist (28px) | " in text
    verdicts = embedding.targets(stored)
    assert len(verdicts) == len(stored["models"])
    assert all(isinstance(t.met, bool) for t in verdicts)
    assert all(t.name in text for t in verdicts)
