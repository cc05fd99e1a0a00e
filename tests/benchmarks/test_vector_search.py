"""The vector-search benchmark's quick mode: it runs end to end (a Milvus server, Milvus Lite, FAISS), and its
result has the documented shape and sane values. No timing is asserted: this machine is shared."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import vector_search as vs
from benchmarks.vector_search.data import REAL_MODEL, SYNTH_DIM, Dataset, recall_at_k, synthetic, with_ground_truth
from benchmarks.vector_search.plan import RECALL_TARGET, TOP_K
from benchmarks.vector_search.sweep import choose, final_ef
from extractors.registry import get_spec
from tests.fixtures.benchmarks import run_quick

ENGINES = {"faiss_flat", "faiss_hnsw", "milvus_server", "milvus_lite"}


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict | None]:
    return run_quick(tmp_path_factory, vs)


@pytest.mark.slow
def test_quick_run_writes_its_result(quick_result):
    result, written = quick_result
    assert written is not None and written["quick"] is True
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
    assert real["dim"] == get_spec(REAL_MODEL).dim
    assert result["datasets"]["synthetic_10k"]["dim"] == SYNTH_DIM
    roles = {r["role"] for r in result["engines"] if r["dataset"] == "real" and r["engine"] == "milvus_server"}
    assert roles == {"current", "tuned"}


@pytest.mark.slow
def test_quick_run_values_are_sane(quick_result):
    result, _ = quick_result
    for r in result["engines"]:
        assert r["rows"] == result["datasets"][r["dataset"]]["rows"], r  # every row was inserted
        if r["engine"] == "faiss_flat":
            assert r["recall_at_10"] == 1.0  # exact search against exact ground truth
        else:  # an index that answers: far better than chance on these small sets
            assert r["recall_at_10"] >= 0.5, r


@pytest.mark.slow
def test_quick_run_sweep_and_recommendation(quick_result):
    result, _ = quick_result
    sweep = result["sweep"]
    plan = result["plan"]
    assert sweep["datasets"] == ["real", "synthetic_10k"]
    assert len(sweep["rows"]) == 2 * len(plan["sweep_m"]) * len(plan["sweep_efc"]) * len(plan["sweep_ef"])
    # HNSW compares a query with a fraction of the rows, not all of them
    for r in sweep["rows"]:
        assert 0 < r["distances_per_query"] < result["datasets"][r["dataset"]]["rows"], r
    pick = sweep["pick"]
    if pick["meets_target"]:
        assert min(pick["recall_at_10"].values()) >= RECALL_TARGET
    rec = result["recommended"]
    assert (rec["hnsw_m"], rec["hnsw_ef_construction"]) == (pick["M"], pick["efConstruction"])
    tuned = result["milvus_ef_sweep"]["tuned"]
    assert set(tuned) == set(result["datasets"])
    by_ef = {key: {r["ef"]: r["recall_at_10"] for r in v["rows"]} for key, v in tuned.items()}
    assert rec["milvus_recall_at_10"] == by_ef["real"][rec["hnsw_ef"]]
    # the chosen ef is the smallest that reaches the target on every data set (when one does)
    assert rec["hnsw_ef"] == max(v["smallest_ef"] for v in tuned.values())
    if rec["meets_target"]:
        assert all(recalls[rec["hnsw_ef"]] >= RECALL_TARGET for recalls in by_ef.values())
        for key, v in tuned.items():
            assert all(by_ef[key][ef] < RECALL_TARGET for ef in by_ef[key] if ef < v["smallest_ef"])
    # the Milvus server rows were measured at the chosen parameters
    for r in result["engines"]:
        if r["role"] == "tuned":
            assert r["hnsw"] == {"M": rec["hnsw_m"], "efConstruction": rec["hnsw_ef_construction"],
                                 "ef": rec["hnsw_ef"]}, r
        if r["role"] == "tuned" and r["engine"] == "milvus_server":
            # the same searches as in its ef sweep (quick runs do not wait for compactions: some slack)
            assert r["recall_at_10"] == pytest.approx(by_ef[r["dataset"]][rec["hnsw_ef"]], abs=0.05)


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
    tuned = {r["dataset"]: r for r in result["engines"] if r["engine"] == "milvus_server" and r["role"] == "tuned"}
    for t in targets:
        key = t.name.split(",")[2].strip().split(" ")[0]
        assert t.met == (tuned[key]["recall_at_10"] >= RECALL_TARGET)
        assert f"| {t.name} |" in md


def test_recall_counts_an_exact_tie_at_the_kth_place_as_a_hit():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((500, 16)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = rng.standard_normal((10, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.argsort(-(queries @ db.T), axis=1)[:, :TOP_K]
    twin = len(db)  # an exact copy of query 0's k-th neighbour, outside the true top k by id
    db = np.concatenate([db, db[exact[0, -1]][None]])
    ds = with_ground_truth(Dataset("t", "t", db, queries))
    assert recall_at_k(exact, ds) == 1.0
    tied = exact.copy()
    tied[0, -1] = twin  # the copy instead of the original: as near, so not a miss
    assert recall_at_k(tied, ds) == 1.0
    worse = exact.copy()
    worse[0, -1] = int(np.argsort(-(queries[0] @ db.T))[TOP_K + 1])  # the (k+2)-th: a miss
    assert recall_at_k(worse, ds) == pytest.approx(1 - 1 / (10 * TOP_K))
    assert recall_at_k(np.full_like(exact, -1), ds) == 0.0


def test_synthetic_sets_are_seeded_prefixes():
    a, qa = synthetic(2000, 10, n_clusters=20, dim=32)
    b, qb = synthetic(1000, 10, n_clusters=20, dim=32)
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
    pick = choose(rows, ["a", "b"])
    # (16, 200) at ef 10 is the cheapest (285 x 100); (8, 40) at ef 32 (300 x 100) and (16, 100) at ef 10
    # (290 x 100) are within 10 %: ties go to the smallest ef, then to the faster build
    assert (pick["M"], pick["efConstruction"], pick["ef"]) == (16, 100, 10) and pick["meets_target"]
    assert pick["recall_at_10"] == {"a": 0.98, "b": 0.96}
    alone = choose(rows, ["a"])
    assert (alone["M"], alone["efConstruction"], alone["ef"]) == (8, 40, 10)  # 100 x 100: no tie
    nothing = choose(rows, ["a", "b"], target=0.999)
    assert not nothing["meets_target"]
    assert final_ef([{"ef": 10, "recall_at_10": 0.9}, {"ef": 16, "recall_at_10": 0.96}]) == (16, True)
    assert final_ef([{"ef": 10, "recall_at_10": 0.9}]) == (10, False)
