"""The vector-search benchmark's quick mode: it runs end to end (a Milvus server, Milvus Lite, FAISS), and its
result has the documented shape and sane values. No timing is asserted: this machine is shared."""

from __future__ import annotations

import json

import numpy as np
import pytest

import benchmarks.common
from benchmarks import vector_search as vs

ENGINES = {"faiss_flat", "faiss_hnsw", "milvus_server", "milvus_lite"}


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
    pytest.importorskip("faiss", reason="faiss-cpu is a dev dependency")
    pytest.importorskip("milvus", reason="the Milvus server comes from the `milvus` package")
    pytest.importorskip("milvus_lite", reason="Milvus Lite comes from the `milvus-lite` package")
    tmp_path = tmp_path_factory.mktemp("bench_results")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("VSEARCH_BENCH_RESULTS", str(tmp_path))
        monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)  # RESULTS is read at import
        result = vs.run(quick=True)
    return result, tmp_path


@pytest.mark.slow
def test_quick_run_writes_its_result(quick_result):
    result, tmp_path = quick_result
    written = json.loads((tmp_path / f"{vs.NAME}.json").read_text())
    assert written["quick"] is True
    assert written["engines"] == result["engines"]
    assert "machine" in written


@pytest.mark.slow
def test_quick_run_covers_every_engine_on_both_data_sets(quick_result):
    result, _ = quick_result
    assert set(result["datasets"]) == {"real", "synthetic_10k"}
    for key in result["datasets"]:
        kinds = {r["engine"] for r in result["engines"] if r["dataset"] == key}
        assert kinds == ENGINES, key
    real = result["datasets"]["real"]
    assert real["dim"] == 128 and result["datasets"]["synthetic_10k"]["dim"] == vs.SYNTH_DIM
    roles = {r["role"] for r in result["engines"] if r["dataset"] == "real" and r["engine"] == "milvus_server"}
    assert roles == {"current", "tuned"}


@pytest.mark.slow
def test_quick_run_values_are_sane(quick_result):
    result, _ = quick_result
    plan = result["plan"]
    for r in result["engines"]:
        assert 0.0 <= r["recall_at_10"] <= 1.0, r
        assert r["insert_rows_per_s"] > 0, r
        assert r["build_s"] >= 0, r
        for key, most in (("nq1", plan["lat1_max"]), (f"nq{vs.BATCH_NQ}", plan["lat64_max"])):
            assert min(vs.MIN_SAMPLES, most) <= r[key]["n"] <= most
            assert 0 < r[key]["p50_ms"] <= r[key]["p99_ms"]
        if r["engine"] == "faiss_flat":
            assert r["recall_at_10"] == 1.0  # exact search against exact ground truth
        else:
            assert r["hnsw"] is not None and r["hnsw"]["ef"] >= 1


@pytest.mark.slow
def test_quick_run_sweep_and_recommendation(quick_result):
    result, _ = quick_result
    sweep = result["sweep"]
    plan = result["plan"]
    assert sweep["datasets"] == ["real", "synthetic_10k"]
    assert len(sweep["rows"]) == 2 * len(plan["sweep_m"]) * len(plan["sweep_efc"]) * len(plan["sweep_ef"])
    assert all(0.0 <= r["recall_at_10"] <= 1.0 and r["distances_per_query"] > 0 for r in sweep["rows"])
    pick = sweep["pick"]
    if pick["meets_target"]:
        assert min(pick["recall_at_10"].values()) >= vs.RECALL_TARGET
    rec = result["recommended"]
    assert (rec["hnsw_m"], rec["hnsw_ef_construction"]) == (pick["M"], pick["efConstruction"])
    assert rec["hnsw_ef"] in plan["sweep_ef"] and rec["hnsw_ef"] >= vs.TOP_K
    tuned = result["milvus_ef_sweep"]["tuned"]
    assert set(tuned) == set(result["datasets"])
    by_ef = {key: {r["ef"]: r["recall_at_10"] for r in v["rows"]} for key, v in tuned.items()}
    assert rec["milvus_recall_at_10"] == by_ef["real"][rec["hnsw_ef"]]
    # the chosen ef is the smallest that reaches the target on every data set (when one does)
    assert rec["hnsw_ef"] == max(v["smallest_ef"] for v in tuned.values())
    if rec["meets_target"]:
        assert all(recalls[rec["hnsw_ef"]] >= vs.RECALL_TARGET for recalls in by_ef.values())
        for key, v in tuned.items():
            assert all(by_ef[key][ef] < vs.RECALL_TARGET for ef in by_ef[key] if ef < v["smallest_ef"])
    # the Milvus server rows were measured at the chosen parameters
    for r in result["engines"]:
        if r["role"] == "tuned":
            assert r["hnsw"] == {"M": rec["hnsw_m"], "efConstruction": rec["hnsw_ef_construction"],
                                 "ef": rec["hnsw_ef"]}, r
        if r["role"] == "tuned" and r["engine"] == "milvus_server" and plan["settle"]:
            # settled collections answer the same searches the same way as in their ef sweep
            assert r["recall_at_10"] == pytest.approx(by_ef[r["dataset"]][rec["hnsw_ef"]], abs=0.01)


@pytest.mark.slow
def test_markdown_and_targets(quick_result):
    result, _ = quick_result
    md = vs.markdown(result)
    assert md.startswith("## ")
    assert "| data | engine |" in md  # the engines table
    assert "| M | efC |" in md  # the sweep table
    assert "| ef | real, current graph |" in md  # the Milvus ef sweep
    assert "hnsw_ef_construction=" in md
    targets = vs.targets(result)
    assert {t.name.split(",")[2].strip().split(" ")[0] for t in targets} == {"real", "synthetic_10k"}
    for t in targets:
        assert t.met == (float(t.measured) >= vs.RECALL_TARGET)
        assert f"| {t.name} |" in md


def test_recall_is_tie_aware_and_flat_search_is_exact():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((500, 16)).astype(np.float32)
    db[1] = db[0]  # an exact duplicate: either may be returned
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = np.concatenate([db[:1], rng.standard_normal((9, 16)).astype(np.float32)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ds = vs.with_ground_truth(vs.Dataset("t", "t", db, queries))
    exact = np.argsort(-(queries @ db.T), axis=1)[:, :vs.TOP_K]
    assert vs.recall_at_k(exact, ds) == 1.0
    assert vs.recall_at_k(np.full_like(exact, -1), ds) == 0.0
    half = exact.copy()
    half[:, 5:] = -1
    assert vs.recall_at_k(half, ds) == pytest.approx(0.5)


def test_synthetic_sets_are_seeded_prefixes():
    a, qa = vs.synthetic(2000, 10, n_clusters=20, dim=32)
    b, qb = vs.synthetic(1000, 10, n_clusters=20, dim=32)
    np.testing.assert_array_equal(a[:1000], b)
    np.testing.assert_array_equal(qa, qb)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def _sweep_row(dataset: str, m: int, efc: int, ef: int, recall: float, ndis: float, build_s: float = 1.0) -> dict:
    return {"dataset": dataset, "dim": 100, "M": m, "efConstruction": efc, "ef": ef, "build_s": build_s,
            "recall_at_10": recall, "distances_per_query": ndis, "p50_ms": 0.1}


def test_choose_needs_the_target_on_every_data_set_and_breaks_ties_by_ef_then_build_time():
    rows = [_sweep_row("a", 8, 40, 10, 0.97, 100), _sweep_row("b", 8, 40, 10, 0.90, 100),  # b fails at ef 10
            _sweep_row("a", 8, 40, 32, 0.99, 150), _sweep_row("b", 8, 40, 32, 0.96, 150),
            _sweep_row("a", 16, 200, 10, 0.98, 140, 5.0), _sweep_row("b", 16, 200, 10, 0.96, 145, 5.0),
            _sweep_row("a", 16, 100, 10, 0.98, 140, 3.0), _sweep_row("b", 16, 100, 10, 0.96, 150, 3.0),
            _sweep_row("a", 32, 100, 16, 0.99, 500, 3.0), _sweep_row("b", 32, 100, 16, 0.99, 500, 3.0)]
    pick = vs.choose(rows, ["a", "b"])
    # (16, 200) at ef 10 is the cheapest (285 x 100); (8, 40) at ef 32 (300 x 100) and (16, 100) at ef 10
    # (290 x 100) are within 10 %: ties go to the smallest ef, then to the faster build
    assert (pick["M"], pick["efConstruction"], pick["ef"]) == (16, 100, 10) and pick["meets_target"]
    assert pick["recall_at_10"] == {"a": 0.98, "b": 0.96}
    alone = vs.choose(rows, ["a"])
    assert (alone["M"], alone["efConstruction"], alone["ef"]) == (8, 40, 10)  # 100 x 100: no tie
    nothing = vs.choose(rows, ["a", "b"], target=0.999)
    assert not nothing["meets_target"]
    assert vs.final_ef([{"ef": 10, "recall_at_10": 0.9}, {"ef": 16, "recall_at_10": 0.96}]) == (16, True)
    assert vs.final_ef([{"ef": 10, "recall_at_10": 0.9}]) == (10, False)
