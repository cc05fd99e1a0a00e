"""Thumbnails, search by region and explanations through the real gateway, Triton and Milvus."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from extractors.datasets import load_fashion_mnist, load_photos
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import CNN_MODEL, VIT_MODEL
from visualsearch.v1 import search_pb2 as pb

OFFSET = 6000  # Fashion-MNIST test images no other module stores (the near-duplicate tests use 0-5000)
N = 40
PREFIX = "explain/"


@pytest.fixture(scope="module")
def stored(gateway):
    ds = load_fashion_mnist("test").subset(range(OFFSET, OFFSET + N))
    ids = [PREFIX + i for i in ds.ids]
    reply = gateway.stub().Upsert(iter(
        pb.UpsertRequest(model=VIT_MODEL, id=ids[i], image=png_bytes(ds.pil(i)),
                         metadata={"tag": pb.Value(string_value="explain")}) for i in range(N)), timeout=120)
    assert reply.upserted == N and not reply.errors
    photos = load_photos()
    photo_ids = [PREFIX + p for p in photos.ids[:8]]
    reply = gateway.stub().Upsert(iter(
        pb.UpsertRequest(model=CNN_MODEL, id=photo_ids[i], image=png_bytes(photos.pil(i)),
                         metadata={"tag": pb.Value(string_value="explain")}) for i in range(8)), timeout=120)
    assert reply.upserted == 8 and not reply.errors
    return ds, ids, photos, photo_ids


def _tag(value: str) -> pb.FilterClause:
    return pb.FilterClause(field="tag", op=pb.FILTER_OP_EQ, value=pb.Value(string_value=value))


def test_thumbnails_are_stored_on_upsert_and_returned_by_get_and_search(gateway, stored):
    ds, ids, photos, photo_ids = stored
    stub = gateway.stub()
    item = stub.Get(pb.GetRequest(model=VIT_MODEL, ids=[ids[0]], include_thumbnails=True), timeout=10).items[0]
    thumb = Image.open(io.BytesIO(item.thumbnail))
    # A 28 px grey image is kept as it is, losslessly.
    assert thumb.format == "PNG" and thumb.size == (28, 28)
    assert np.array_equal(np.asarray(thumb.convert("L")), np.asarray(ds.pil(0).convert("L")))
    assert not stub.Get(pb.GetRequest(model=VIT_MODEL, ids=[ids[0]]), timeout=10).items[0].thumbnail
    photo = stub.Get(pb.GetRequest(model=CNN_MODEL, ids=[photo_ids[0]], include_thumbnails=True),
                     timeout=10).items[0]
    im = Image.open(io.BytesIO(photo.thumbnail))
    assert im.format == "JPEG" and max(im.size) == 64  # a colour photo: JPEG, its longer side 64
    reply = stub.Search(pb.SearchRequest(model=VIT_MODEL, id=ids[3], top_k=5, filters=[_tag("explain")],
                                         include_thumbnails=True), timeout=30)
    assert reply.hits[0].id == ids[3] and all(h.thumbnail.startswith(b"\x89PNG") for h in reply.hits)
    plain = stub.Search(pb.SearchRequest(model=VIT_MODEL, id=ids[3], top_k=5), timeout=30)
    assert not any(h.thumbnail for h in plain.hits) and plain.timings.explain_ms == 0


def test_a_region_of_a_mosaic_finds_the_image_in_it(gateway, stored):
    ds, ids, _, _ = stored
    mosaic = Image.new("L", (56, 56))
    for k, (x, y) in enumerate([(0, 0), (28, 0), (0, 28), (28, 28)]):
        mosaic.paste(ds.pil(k).convert("L"), (x, y))
    stub = gateway.stub()
    for k, (x0, y0) in enumerate([(0, 0), (0.5, 0), (0, 0.5), (0.5, 0.5)]):
        region = pb.Region(x0=x0, y0=y0, x1=x0 + 0.5, y1=y0 + 0.5)
        reply = stub.Search(pb.SearchRequest(model=VIT_MODEL, image=png_bytes(mosaic), region=region, top_k=1,
                                             filters=[_tag("explain")]), timeout=30)
        assert reply.hits[0].id == ids[k] and reply.hits[0].score > 0.99


@pytest.mark.parametrize("region, message", [
    (pb.Region(x0=0.5, y0=0, x1=0.5, y1=1), "not a box inside the image"),
    (pb.Region(x0=-0.1, y0=0, x1=0.5, y1=1), "not a box inside the image"),
    (pb.Region(x0=0, y0=0, x1=float("nan"), y1=1), "NaN"),
])
def test_a_bad_region_is_invalid_argument(gateway, stored, region, message):
    ds, _, _, _ = stored
    with pytest.raises(grpc.RpcError) as e:
        gateway.stub().Search(pb.SearchRequest(model=VIT_MODEL, image=png_bytes(ds.pil(0)), region=region),
                              timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()


def test_region_and_explain_png_misuse_say_what_to_fix(gateway, stored):
    _, ids, _, _ = stored
    stub = gateway.stub()
    for request, message in [
        (pb.SearchRequest(model=VIT_MODEL, id=ids[0], region=pb.Region(x0=0, y0=0, x1=1, y1=1)), "image queries only"),
        (pb.SearchRequest(model=VIT_MODEL, id=ids[0], explain_png=True), "set explain too"),
        (pb.SearchRequest(model=VIT_MODEL, id=ids[0], explain=True, top_k=101), "explain takes top_k up to 100"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            stub.Search(request, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()


@pytest.mark.parametrize("model", [VIT_MODEL, CNN_MODEL])
def test_explanations_split_each_score_over_the_regions(gateway, stored, model):
    ds, ids, photos, photo_ids = stored
    image = png_bytes(ds.pil(5)) if model == VIT_MODEL else png_bytes(photos.pil(2))
    grid = 4 if model == VIT_MODEL else 7
    reply = gateway.stub().Search(pb.SearchRequest(model=model, image=image, top_k=5, filters=[_tag("explain")],
                                                   explain=True, explain_png=True), timeout=60)
    assert reply.hits[0].id == (ids[5] if model == VIT_MODEL else photo_ids[2])
    assert reply.timings.explain_ms > 0
    for hit in reply.hits:
        ex = hit.explanation
        assert (ex.grid_h, ex.grid_w) == (grid, grid)
        assert len(ex.query_heatmap) == len(ex.hit_heatmap) == grid * grid
        # The query's regions plus the non-spatial rest give the score Milvus computed.
        assert sum(ex.query_heatmap) + ex.non_spatial == pytest.approx(hit.score, abs=2e-4)
        if model == CNN_MODEL:
            assert abs(ex.non_spatial) < 2e-4  # mean pooling: the cells are the whole embedding
        for png in (ex.query_overlay_png, ex.hit_overlay_png):
            assert Image.open(io.BytesIO(png)).size == (160, 160)
    # The hit that is the query itself, from its lossless 28 px thumbnail: both sides are the same heatmap.
    if model == VIT_MODEL:
        top = reply.hits[0].explanation
        np.testing.assert_allclose(top.query_heatmap, top.hit_heatmap, atol=1e-4)


def test_explain_by_id_uses_the_stored_thumbnail_and_by_vector_gives_the_hit_side(gateway, stored):
    _, ids, _, _ = stored
    stub = gateway.stub()
    by_id = stub.Search(pb.SearchRequest(model=VIT_MODEL, id=ids[7], top_k=3, filters=[_tag("explain")],
                                         explain=True), timeout=30)
    assert by_id.hits[0].id == ids[7]
    assert sum(by_id.hits[0].explanation.query_heatmap) + by_id.hits[0].explanation.non_spatial == \
        pytest.approx(1.0, abs=1e-3)
    vector = stub.Get(pb.GetRequest(model=VIT_MODEL, ids=[ids[7]], include_vectors=True), timeout=10).items[0].vector
    by_vector = stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=vector, top_k=3, filters=[_tag("explain")],
                                             explain=True), timeout=30)
    ex = by_vector.hits[0].explanation
    assert not ex.query_heatmap and len(ex.hit_heatmap) == 16
