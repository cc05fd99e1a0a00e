"""``VectorStore.scan`` (FindDuplicates' key pages) and range search, on the Milvus server and Milvus Lite."""

from __future__ import annotations

import numpy as np
import pytest

from server.vector_store.milvus import range_radius
from tests.fixtures.milvus import BACKENDS

# Ids that break an expression pasted together unescaped (pymilvus' query iterator does that with the last key).
AWKWARD_IDS = ['it\'s "quoted"', "back\\slash", 'x" or id != "', "tab\there", "ünïcödé", "a", "z" * 200]


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_pages_every_id_once_in_key_order(make_store, backend):
    sut = make_store(backend)
    ids = AWKWARD_IDS + [f"item-{i:03d}" for i in range(40)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sut.store.upsert(sut.model, ids, vectors, [{} for _ in ids])
    seen, after = [], None
    while page := sut.store.scan(sut.model, after, 7):
        assert len(page) <= 7
        seen += [r.id for r in page]
        after = page[-1].id
        got = {r.id: r.vector for r in page}
        assert all(np.allclose(got[i], vectors[ids.index(i)], atol=1e-6) for i in got)
    assert seen == sorted(ids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_range_search_keeps_exactly_the_scores_at_or_above_the_bound(make_store, backend):
    sut = make_store(backend)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(300)]
    sut.store.upsert(sut.model, ids, vectors, [{} for _ in ids])
    query = vectors[0]
    exact = vectors @ query
    order = np.argsort(-exact)
    bound = float((exact[order[19]] + exact[order[20]]) / 2)
    (hits,) = sut.store.search(sut.model, query[None], 300, (), [], bound)
    assert {h.id for h in hits} == {ids[k] for k in order[:20]}
    # the bound itself is kept: a hit's own score as the bound returns it
    (plain,) = sut.store.search(sut.model, query[None], 5, (), [])
    (kept,) = sut.store.search(sut.model, query[None], 300, (), [], plain[3].score)
    assert plain[3].id in {h.id for h in kept}


def test_the_radius_is_the_next_float32_below_the_bound():
    for bound in (0.9, -1.0, 1.0, 0.123456789):
        r = range_radius(bound)
        assert np.float32(r) < np.float32(bound)
        assert np.nextafter(np.float32(r), np.float32(2)) == np.float32(bound)
