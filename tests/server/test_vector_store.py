"""MilvusVectorStore against a real Milvus 2.3.5 server and against Milvus Lite (same tests, both backends)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from server.settings import Settings
from server.vector_store import VectorStore, open_store
from server.vector_store.base import (
    CollectionNotFound,
    FilterClause,
    VectorStoreError,
    VectorStoreUnavailable,
)
from server.vector_store.milvus import MilvusVectorStore, collection_name
from tests.fixtures.milvus import BACKENDS, StoreUnderTest, backend_uri, unique_model, wait_serving

N, DIM = 300, 32
SOURCES = ["camera", "scan", "web"]
TRICKY = {0: 'quote"d', 1: "back\\slash", 2: "it's"}  # stored as the source of items 0-2


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_metadata(n: int) -> list[dict]:
    return [{"label": i % 10, "source": TRICKY.get(i, SOURCES[i % 3]), "rank": i / 10} for i in range(n)]


@dataclass
class Populated:
    sut: StoreUnderTest
    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict]

    @property
    def store(self) -> MilvusVectorStore:
        return self.sut.store

    @property
    def model(self) -> str:
        return self.sut.model


@pytest.fixture(scope="module", params=BACKENDS)
def populated(request: pytest.FixtureRequest):
    """300 random unit vectors with metadata, in one collection per backend, shared by the read-only tests."""
    backend = request.param
    uri, server = backend_uri(request, backend)
    store = MilvusVectorStore(uri, Settings())
    sut = StoreUnderTest(store=store, model=unique_model("pop"), backend=backend, server=server)
    ids = [f"img{i:03d}" for i in range(N)]
    vectors = unit_vectors(N, DIM, seed=0)
    metadata = make_metadata(N)
    assert store.upsert(sut.model, ids, vectors, metadata) == N
    yield Populated(sut, ids, vectors, metadata)
    try:
        store.drop(sut.model)
    finally:
        store.close()


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, make_store) -> StoreUnderTest:
    return make_store(request.param)


def search_ids(p: Populated, query: np.ndarray, top_k: int, filters=None) -> list[list[str]]:
    return [[h.id for h in hits] for hits in p.store.search(p.model, query, top_k, filters)]


# -- read-only, on the shared collection ------------------------------------------------------------------
def test_implements_interface(populated: Populated):
    assert isinstance(populated.store, VectorStore)
    assert populated.store.ping() is True


def test_count(populated: Populated):
    assert populated.store.count(populated.model) == N


def test_stored_vector_finds_itself_first(populated: Populated):
    rows = [0, 7, 123, 299]
    results = populated.store.search(populated.model, populated.vectors[rows], top_k=5)
    assert len(results) == len(rows)
    for row, hits in zip(rows, results, strict=True):
        assert hits[0].id == populated.ids[row]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert hits[0].metadata == populated.metadata[row]
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 - 1e-3 <= s <= 1.0 + 1e-3 for s in scores)


@pytest.mark.parametrize("top_k", [1, 7, 100])  # 100 > hnsw_ef: ef is raised to top_k
def test_top_k_respected(populated: Populated, top_k: int):
    hits = populated.store.search(populated.model, populated.vectors[:2], top_k=top_k)
    assert [len(h) for h in hits] == [top_k, top_k]
    assert len({h.id for h in hits[0]}) == top_k


def test_search_accepts_a_single_vector(populated: Populated):
    hits = populated.store.search(populated.model, populated.vectors[5], top_k=3)
    assert hits[0][0].id == populated.ids[5]


def test_filter_equality(populated: Populated):
    row = 13  # label 3
    hits = populated.store.search(populated.model, populated.vectors[row:row + 1], 20,
                                  [FilterClause("label", "==", 3)])[0]
    assert hits and hits[0].id == populated.ids[row]
    assert {h.metadata["label"] for h in hits} == {3}


def test_filter_in_and_range(populated: Populated):
    hits = populated.store.search(populated.model, populated.vectors[:1], 100,
                                  (FilterClause("label", "in", (1, 2)),))[0]
    assert hits and {h.metadata["label"] for h in hits} <= {1, 2}
    hits = populated.store.search(populated.model, populated.vectors[:1], 100,
                                  [FilterClause("label", ">=", 8), FilterClause("rank", "<", 15.0)])[0]
    assert hits and all(h.metadata["label"] >= 8 and h.metadata["rank"] < 15.0 for h in hits)
    hits = populated.store.search(populated.model, populated.vectors[:1], 100,
                                  (FilterClause("source", "in", ("scan", "web")),))[0]
    assert hits and {h.metadata["source"] for h in hits} <= {"scan", "web"}


def test_filter_string_equality(populated: Populated):
    hits = populated.store.search(populated.model, populated.vectors[4:5], 50,
                                  [FilterClause("source", "==", "scan")])[0]
    assert hits and hits[0].id == populated.ids[4]  # 4 % 3 == 1: "scan"
    assert {h.metadata["source"] for h in hits} == {"scan"}


def test_filter_on_id(populated: Populated):
    hits = populated.store.search(populated.model, populated.vectors[:1], 10,
                                  (FilterClause("id", "in", ("img010", "img020")),))[0]
    assert sorted(h.id for h in hits) == ["img010", "img020"]


@pytest.mark.parametrize("row", sorted(TRICKY))
def test_filter_strings_with_quotes_and_backslashes_match_exactly(populated: Populated, row: int):
    hits = populated.store.search(populated.model, populated.vectors[:1], 50,
                                  [FilterClause("source", "==", TRICKY[row])])[0]
    assert [h.id for h in hits] == [populated.ids[row]]


@pytest.mark.parametrize("value", ['x" or id != "', 'scan" or id != "', "scan' or id != '", 'scan\\" or id != \\"',
                                   '") or (id != "', "scan\nor id != ''"])
def test_injection_value_matches_nothing(populated: Populated, value: str):
    hits = populated.store.search(populated.model, populated.vectors[:1], 50,
                                  [FilterClause("source", "==", value)])[0]
    assert hits == []


def test_output_fields(populated: Populated):
    hits = populated.store.search(populated.model, populated.vectors[:1], 3, output_fields=["label"])[0]
    assert hits[0].metadata == {"label": 0}
    hits = populated.store.search(populated.model, populated.vectors[:1], 3, output_fields=[])[0]
    assert hits[0].id == populated.ids[0] and hits[0].metadata == {}


def test_get_returns_vectors_and_metadata(populated: Populated):
    records = populated.store.get(populated.model, ["img005", "missing", "img002"])
    assert [r.id for r in records] == ["img005", "img002"]
    for r in records:
        row = int(r.id[3:])
        assert r.vector.dtype == np.float32 and r.vector.shape == (DIM,)
        np.testing.assert_allclose(r.vector, populated.vectors[row], rtol=1e-6, atol=1e-6)
        assert r.metadata == populated.metadata[row]
    assert populated.store.get(populated.model, []) == []


def test_describe(populated: Populated):
    info = populated.store.describe(populated.model)
    assert info is not None
    assert info["name"] == populated.model
    assert info["dim"] == DIM and info["metric"] == "COSINE" and info["count"] == N
    assert populated.store.describe(unique_model("absent")) is None


def test_unknown_model_raises_collection_not_found(populated: Populated):
    absent = unique_model("absent")
    with pytest.raises(CollectionNotFound):
        populated.store.search(absent, populated.vectors[:1], 3)
    with pytest.raises(CollectionNotFound):
        populated.store.count(absent)
    with pytest.raises(CollectionNotFound):
        populated.store.get(absent, ["x"])


def test_dimension_mismatch_raises(populated: Populated):
    other = unit_vectors(1, DIM + 1, seed=3)
    with pytest.raises(VectorStoreError, match="dimension"):
        populated.store.search(populated.model, other, 3)
    with pytest.raises(VectorStoreError, match="dimension"):
        populated.store.upsert(populated.model, ["x"], other, [{}])
    with pytest.raises(VectorStoreError, match="dimension"):
        populated.store.ensure_collection(populated.model, DIM + 1)
    populated.store.ensure_collection(populated.model, DIM)  # same dim: a no-op


def test_mismatched_lengths_raise_vector_store_error(populated: Populated):
    with pytest.raises(VectorStoreError, match="must match"):
        populated.store.upsert(populated.model, ["a", "b"], populated.vectors[:1], [{}])
    assert populated.store.count(populated.model) == N


def test_id_limit_is_in_bytes_as_milvus_counts_them(populated: Populated):
    """The gateway counts ids in UTF-8 bytes (server.validation.check_id) because the Milvus server's VARCHAR
    max_length does: 128 two-byte letters fill the 256 limit and are stored, 129 (fewer characters than the limit)
    are refused. Milvus Lite enforces no length at all."""
    s, m, v = populated.store, populated.model, populated.vectors
    limit = Settings().max_id_length
    at_limit = "é" * (limit // 2)
    try:
        assert s.upsert(m, [at_limit], v[:1], [{}]) == 1
        assert [r.id for r in s.get(m, [at_limit])] == [at_limit]
        if populated.sut.backend == "server":
            with pytest.raises(VectorStoreError):
                s.upsert(m, ["é" * (limit // 2 + 1)], v[:1], [{}])
    finally:
        s.delete(m, [at_limit])


# -- writes, each on a fresh collection ----------------------------------------------------------------------
def test_upsert_is_idempotent(fresh: StoreUnderTest):
    s, m = fresh.store, fresh.model
    ids = [f"p{i}" for i in range(50)]
    vectors = unit_vectors(50, 8, seed=1)
    assert s.upsert(m, ids, vectors, [{"v": 1} for _ in ids]) == 50
    assert s.count(m) == 50
    assert s.upsert(m, ids, vectors, [{"v": 2} for _ in ids]) == 50  # re-sent: replaces, no second copy
    assert s.count(m) == 50
    assert [r.metadata for r in s.get(m, ["p0", "p49"])] == [{"v": 2}, {"v": 2}]
    hits = s.search(m, vectors[:1], 5)[0]
    assert [h.id for h in hits].count("p0") == 1
    # Repeated ids within one call: stored once, the last one wins.
    assert s.upsert(m, ["d", "d"], vectors[:2], [{"n": 1}, {"n": 2}]) == 1
    assert s.count(m) == 51
    (rec,) = s.get(m, ["d"])
    assert rec.metadata == {"n": 2}
    np.testing.assert_allclose(rec.vector, vectors[1], atol=1e-6)


def test_delete_removes(fresh: StoreUnderTest):
    s, m = fresh.store, fresh.model
    vectors = unit_vectors(10, 8, seed=2)
    s.upsert(m, [f"d{i}" for i in range(10)], vectors, [{} for _ in range(10)])
    assert s.delete(m, ["d1", "d2", "nope", "d1"]) == 2
    assert s.count(m) == 8
    assert s.get(m, ["d1", "d2", "d3"])[0].id == "d3"
    assert len(s.get(m, ["d1", "d2"])) == 0
    hits = s.search(m, vectors[1:2], 10)[0]
    assert "d1" not in {h.id for h in hits}
    assert s.delete(m, []) == 0


def test_ensure_collection_then_describe(fresh: StoreUnderTest):
    s, m = fresh.store, fresh.model
    assert s.describe(m) is None
    s.ensure_collection(m, 24)
    s.ensure_collection(m, 24)
    info = s.describe(m)
    assert info["dim"] == 24 and info["count"] == 0 and info["metric"] == "COSINE"
    with pytest.raises(VectorStoreError, match="dimension"):
        s.ensure_collection(m, 25)
    s.flush(m)


def test_model_names_are_sanitised(fresh: StoreUnderTest):
    s = fresh.store
    odd = fresh.model + "/v1.2-beta"
    v = unit_vectors(2, 4, seed=4)
    try:
        assert s.upsert(odd, ["a", "b"], v, [{}, {}]) == 2
        assert s.describe(odd)["name"] == odd
        assert s.search(odd, v[:1], 1)[0][0].id == "a"
    finally:
        s.drop(odd)
    assert collection_name("a-b") != collection_name("a_b")
    assert collection_name("efficientnet_lite0_imagenet") == "vs_efficientnet_lite0_imagenet"


# -- availability ----------------------------------------------------------------------------------------------
def test_unreachable_server_is_unavailable():
    from launchers.ports import free_port

    store = open_store(f"http://127.0.0.1:{free_port()}", Settings(), timeout_s=2)
    try:
        t0 = time.monotonic()
        assert store.ping() is False
        assert time.monotonic() - t0 < 5
        with pytest.raises(VectorStoreUnavailable):
            store.count("m")
        with pytest.raises(VectorStoreUnavailable):
            store.search("m", np.ones((1, 4), np.float32), 1)
    finally:
        store.close()


@pytest.mark.slow
def test_data_survives_server_restart(tmp_path):
    """On its own instance (restarting the session's would disturb the other tests' collections)."""
    from launchers.milvus import MilvusServer

    m = unique_model()
    with MilvusServer(tmp_path / "milvus", startup_timeout_s=180) as server:
        s = MilvusVectorStore(server.uri, Settings())
        try:
            vectors = unit_vectors(40, 16, seed=5)
            ids = [f"r{i}" for i in range(40)]
            s.upsert(m, ids, vectors, [{"label": i % 4} for i in range(40)])
            server.restart()
            assert server.ready
            assert wait_serving(lambda: s.count(m)) == 40
            hits = wait_serving(lambda: s.search(m, vectors[7:8], 3, [FilterClause("label", "==", 3)]))[0]
            assert hits[0].id == "r7" and hits[0].score == pytest.approx(1.0, abs=1e-3)
            assert s.get(m, ["r39"])[0].metadata == {"label": 3}
        finally:
            s.close()
