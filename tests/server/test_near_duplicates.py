"""Near-duplicates on the real stack (gateway process, Triton, Milvus 2.3.5): verdicts, range search, paging,
Embed, the dedup gate on Upsert and FindDuplicates.

The gateway here reads its calibrations from a folder of this module (``VSEARCH_MODEL_REPOSITORY``, re-read on
every call: ``VSEARCH_CALIBRATION_RECHECK_S=0``), so each test writes the thresholds it needs, derived from
scores it measured through Embed, and can corrupt the file. Only the ViT gets a calibration; the EfficientNet
is the uncalibrated model."""

from __future__ import annotations

import functools
import io
import json
import math
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from extractors.copies import apply_edit, level_rng
from extractors.datasets import load_fashion_mnist
from launchers.gateway import GatewayProcess
from server.calibration import Calibration, Threshold, write
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import CNN_MODEL, VIT_DIM, VIT_MODEL
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc


class Calibrated:
    """A gateway process whose calibrations the test controls."""

    def __init__(self, process: GatewayProcess, repo: Path) -> None:
        self.process = process
        self.repo = repo
        self.stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(process.address))

    @property
    def path(self) -> Path:
        return self.repo / VIT_MODEL / "calibration.json"

    def calibrate(self, near: float, exact: float) -> Calibration:
        c = Calibration(VIT_MODEL, Threshold(exact, 0.99, 0.9), Threshold(near, 0.99, 0.3), 0.99,
                        "2026-01-01T00:00:00+00:00")
        write(c, self.path)
        return c

    def embed(self, images: list[bytes], model: str = VIT_MODEL) -> np.ndarray:
        reply = self.stub.Embed(pb.EmbedRequest(model=model, images=images), timeout=60)
        return np.array([v.values for v in reply.vectors], dtype=np.float32)

    def upsert(self, items: list[pb.UpsertRequest]) -> pb.UpsertResponse:
        return self.stub.Upsert(iter(items), timeout=120)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.process.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()


@pytest.fixture(scope="module")
def calibrated(triton, milvus_server, tmp_path_factory) -> Iterator[Calibrated]:
    repo = tmp_path_factory.mktemp("calibrations")
    (repo / VIT_MODEL).mkdir()
    env = {"VSEARCH_MODEL_REPOSITORY": str(repo), "VSEARCH_CALIBRATION_RECHECK_S": "0"}
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env=env) as process:
        yield Calibrated(process, repo)


@functools.cache
def _test_set():
    return load_fashion_mnist("test")


def fmnist(i: int) -> Image.Image:
    return _test_set().pil(i)


def jpeg_copy(image: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def edited(image: Image.Image, level: str, i: int) -> bytes:
    return png_bytes(apply_edit(image, level, level_rng(0, i, level)))


def item(model_id: str, image: bytes, policy: int = pb.DUPLICATE_POLICY_ALLOW, tag: str = "",
         model: str = VIT_MODEL) -> pb.UpsertRequest:
    meta = {"tag": pb.Value(string_value=tag)} if tag else {}
    return pb.UpsertRequest(model=model, id=model_id, image=image, duplicate_policy=policy, metadata=meta)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


# ------------------------------------------------------------------------------------------ search options
@pytest.fixture(scope="module")
def tagged(calibrated) -> tuple[str, list[str], np.ndarray]:
    """200 Fashion-MNIST test images under fresh ids with one tag: (tag, ids, their vectors as stored)."""
    tag = uuid.uuid4().hex[:10]
    ids = [f"{tag}-{i}" for i in range(200)]
    reply = calibrated.upsert([item(ids[i], png_bytes(fmnist(1000 + i)), tag=tag) for i in range(200)])
    assert reply.upserted == 200 and not reply.errors
    got = calibrated.stub.Get(pb.GetRequest(model=VIT_MODEL, ids=ids, include_vectors=True), timeout=30)
    by_id = {it.id: it.vector.values for it in got.items}
    return tag, ids, np.array([by_id[i] for i in ids], dtype=np.float32)


def test_range_search_returns_exactly_the_items_above_min_score(calibrated, tagged):
    tag, ids, vectors = tagged
    query = calibrated.embed([edited(fmnist(1000), "rotate_5", 0)])[0]
    exact = vectors @ query
    order = np.argsort(-exact)
    bound = float((exact[order[14]] + exact[order[15]]) / 2)  # 15 items above, none within float error of it
    tag_filter = pb.FilterClause(field="tag", op=pb.FILTER_OP_EQ, value=pb.Value(string_value=tag))
    reply = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=query.tolist()),
                                                    top_k=200, min_score=bound, filters=[tag_filter]), timeout=30)
    assert {h.id for h in reply.hits} == {ids[k] for k in order[:15]}
    assert all(h.score >= bound for h in reply.hits)
    # The bound itself is kept: min_score equal to a hit's own score still returns that hit.
    plain = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=query.tolist()),
                                                    top_k=5, filters=[tag_filter]), timeout=30)
    third = plain.hits[2]
    again = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=query.tolist()),
                                                    top_k=200, min_score=third.score, filters=[tag_filter]),
                                   timeout=30)
    assert third.id in {h.id for h in again.hits} and len(again.hits) >= 3


def test_pages_are_disjoint_and_make_up_the_ranking(calibrated, tagged):
    tag, ids, _ = tagged
    tag_filter = pb.FilterClause(field="tag", op=pb.FILTER_OP_EQ, value=pb.Value(string_value=tag))

    def page(offset: int, top_k: int) -> list[str]:
        reply = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, id=ids[3], top_k=top_k, offset=offset,
                                                        filters=[tag_filter]), timeout=30)
        return [h.id for h in reply.hits]

    pages = [page(0, 10), page(10, 10), page(20, 10)]
    assert all(len(p) == 10 for p in pages)
    assert len(set(pages[0]) | set(pages[1]) | set(pages[2])) == 30
    assert set(pages[0] + pages[1] + pages[2]) == set(page(0, 30))
    assert pages[0][0] == ids[3]


def test_every_hit_carries_its_verdict_and_min_verdict_keeps_the_bound(calibrated, tagged):
    tag, ids, vectors = tagged
    original = fmnist(1000)
    query = calibrated.embed([edited(original, "noise_16", 0)])[0]
    near = float(vectors[0] @ query) - 0.01
    c = calibrated.calibrate(near=near, exact=min(1.0, near + 0.02))
    tag_filter = pb.FilterClause(field="tag", op=pb.FILTER_OP_EQ, value=pb.Value(string_value=tag))
    reply = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=query.tolist()),
                                                    top_k=20, filters=[tag_filter]), timeout=30)
    names = {pb.VERDICT_EXACT: "EXACT", pb.VERDICT_NEAR_DUPLICATE: "NEAR_DUPLICATE", pb.VERDICT_SIMILAR: "SIMILAR"}
    assert [names[h.verdict] for h in reply.hits] == [c.verdict(h.score) for h in reply.hits]
    assert reply.hits[0].id == ids[0] and reply.hits[0].verdict != pb.VERDICT_SIMILAR
    only = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=query.tolist()),
                                                   top_k=20, filters=[tag_filter],
                                                   min_verdict=pb.VERDICT_NEAR_DUPLICATE), timeout=30)
    similar = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=query.tolist()),
                                                      top_k=20, filters=[tag_filter],
                                                      min_verdict=pb.VERDICT_SIMILAR), timeout=30)
    assert [h.id for h in similar.hits] == [h.id for h in reply.hits]  # SIMILAR or better: every hit
    expected = [h.id for h in reply.hits if h.score >= c.near_duplicate.min_score]
    assert [h.id for h in only.hits] == expected
    assert all(h.verdict in (pb.VERDICT_NEAR_DUPLICATE, pb.VERDICT_EXACT) for h in only.hits)


def test_embed_returns_the_vectors_the_store_holds(calibrated, tagged):
    _, _, vectors = tagged
    got = calibrated.embed([png_bytes(fmnist(1000)), png_bytes(fmnist(1001))])
    assert got.shape == (2, VIT_DIM)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert np.allclose(np.sum(got * vectors[:2], axis=1), 1.0, atol=1e-4)


# ------------------------------------------------------------------------------------------ the dedup gate
def test_each_duplicate_policy_does_what_it_says(calibrated):
    run = uuid.uuid4().hex[:8]
    original, distinct = fmnist(2000), fmnist(2001)
    copy = edited(original, "jpeg_20", 2000)
    o_id = f"{run}-original"
    scores = calibrated.embed([png_bytes(original), copy, png_bytes(distinct)])
    copy_score, distinct_score = float(scores[0] @ scores[1]), float(scores[0] @ scores[2])
    near = copy_score - 0.005
    assert distinct_score < near, "precondition: the distinct image scores below the copy"
    calibrated.calibrate(near=near, exact=min(1.0, copy_score + 0.001))
    assert calibrated.upsert([item(o_id, png_bytes(original))]).upserted == 1

    def upsert(policy: int, item_id: str, image: bytes = copy) -> pb.UpsertResponse:
        return calibrated.upsert([item(item_id, image, policy)])

    def stored(item_id: str) -> bool:
        return bool(calibrated.stub.Get(pb.GetRequest(model=VIT_MODEL, ids=[item_id]), timeout=30).items)

    # Right after the original's write (Milvus may not show it yet at Bounded reads): the recent writes catch it.
    rejected = upsert(pb.DUPLICATE_POLICY_REJECT, f"{run}-reject")
    assert rejected.upserted == 0 and [e.code for e in rejected.errors] == ["ALREADY_EXISTS"]
    assert o_id in rejected.errors[0].message
    assert [(d.id, d.duplicate_of, d.action) for d in rejected.duplicates] == [
        (f"{run}-reject", o_id, pb.DUPLICATE_POLICY_REJECT)]
    assert rejected.duplicates[0].score == pytest.approx(copy_score, abs=2e-3)
    skipped = upsert(pb.DUPLICATE_POLICY_SKIP, f"{run}-skip")
    assert (skipped.upserted, skipped.skipped, list(skipped.errors)) == (0, 1, [])
    assert skipped.duplicates[0].duplicate_of == o_id and skipped.duplicates[0].action == pb.DUPLICATE_POLICY_SKIP
    assert not stored(f"{run}-reject") and not stored(f"{run}-skip")
    # The same id again is never a duplicate of itself (idempotency by id); a distinct image passes.
    again = calibrated.upsert([item(o_id, png_bytes(original), pb.DUPLICATE_POLICY_REJECT),
                               item(f"{run}-distinct", png_bytes(distinct), pb.DUPLICATE_POLICY_REJECT)])
    assert (again.upserted, list(again.errors), list(again.duplicates)) == (2, [], [])
    flagged = upsert(pb.DUPLICATE_POLICY_FLAG, f"{run}-flag")
    assert flagged.upserted == 1 and not flagged.errors and stored(f"{run}-flag")
    assert [(d.duplicate_of, d.action) for d in flagged.duplicates] == [(o_id, pb.DUPLICATE_POLICY_FLAG)]
    assert flagged.duplicates[0].verdict in (pb.VERDICT_NEAR_DUPLICATE, pb.VERDICT_EXACT)
    allowed = upsert(pb.DUPLICATE_POLICY_ALLOW, f"{run}-allow")
    assert allowed.upserted == 1 and not allowed.duplicates and stored(f"{run}-allow")
    text = calibrated.metrics()
    for action in ("flag", "skip", "reject"):
        assert f'vsearch_upsert_duplicates_total{{action="{action}",model="{VIT_MODEL}"}}' in text


def test_the_gate_sees_earlier_items_of_the_same_stream(calibrated):
    run = uuid.uuid4().hex[:8]
    original = fmnist(2100)
    copy = edited(original, "jpeg_20", 2100)
    scores = calibrated.embed([png_bytes(original), copy])
    calibrated.calibrate(near=float(scores[0] @ scores[1]) - 0.005, exact=1.0)
    reply = calibrated.upsert([item(f"{run}-a", png_bytes(original), pb.DUPLICATE_POLICY_SKIP),
                               item(f"{run}-b", copy, pb.DUPLICATE_POLICY_SKIP)])
    assert (reply.upserted, reply.skipped) == (1, 1)
    assert [(d.id, d.duplicate_of) for d in reply.duplicates] == [(f"{run}-b", f"{run}-a")]


# ------------------------------------------------------------------------------------------ FindDuplicates
def test_find_duplicates_groups_the_injected_copies(calibrated):
    run = uuid.uuid4().hex[:8]
    originals = {f'{run}-o{i}' + ('-it\'s "quoted" \\' if i == 0 else ''): fmnist(3000 + i) for i in range(40)}
    copies = {f"{run}-copy-of-{k}": (k, edited(img, "jpeg_20", 3000 + n))
              for n, (k, img) in enumerate(list(originals.items())[:4])}
    items = [item(k, png_bytes(img)) for k, img in originals.items()] + [item(k, b) for k, (_, b) in copies.items()]
    assert calibrated.upsert(items).upserted == 44
    pairs = calibrated.embed([png_bytes(originals[o]) for o, _ in copies.values()] + [b for _, b in copies.values()])
    copy_scores = np.sum(pairs[:4] * pairs[4:], axis=1)
    bound = float(copy_scores.min()) - 0.005
    stream = list(calibrated.stub.FindDuplicates(pb.FindDuplicatesRequest(model=VIT_MODEL, min_score=bound),
                                                 timeout=120))
    kinds = [r.WhichOneof("message") for r in stream]
    assert kinds[0] == "progress" and kinds[-1] == "summary" and "group" in kinds
    summary = stream[-1].summary
    assert summary.items >= 44 and summary.min_score == pytest.approx(bound) and summary.elapsed_s > 0
    progress = [r.progress for r in stream if r.WhichOneof("message") == "progress"]
    assert progress[-1].scanned == summary.items
    groups = [set(r.group.ids) for r in stream if r.WhichOneof("message") == "group"]
    assert summary.groups == len(groups)
    for copy_id, (original_id, _) in copies.items():
        assert any({copy_id, original_id} <= g for g in groups), copy_id


def test_find_duplicates_stops_at_the_pair_limit(triton, milvus_server, calibrated):
    env = {"VSEARCH_MODEL_REPOSITORY": str(calibrated.repo), "VSEARCH_DEDUP_MAX_PAIRS": "3"}
    # Images no other test indexes: an exact duplicate of another test's item would tie with it at score 1.
    calibrated.upsert([item(f"limit-{i}", png_bytes(fmnist(5000 + i))) for i in range(10)])
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env=env) as process:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(process.address))
        assert code_of(lambda: list(stub.FindDuplicates(pb.FindDuplicatesRequest(model=VIT_MODEL, min_score=-1.0),
                                                        timeout=60))) == grpc.StatusCode.RESOURCE_EXHAUSTED


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_gets_invalid_argument_with_what_to_fix(calibrated):
    calibrated.calibrate(near=0.9, exact=0.99)
    stub = calibrated.stub
    image = png_bytes(fmnist(0))
    bad_searches = [dict(min_score=1.5), dict(min_score=-1.01), dict(min_score=math.nan), dict(offset=-1),
                    dict(offset=995, top_k=10), dict(min_verdict=7),
                    dict(model=CNN_MODEL, min_verdict=pb.VERDICT_NEAR_DUPLICATE)]
    for kw in bad_searches:
        req = pb.SearchRequest(**{"model": VIT_MODEL, "image": image, **kw})
        assert code_of(lambda req=req: stub.Search(req, timeout=30)) == grpc.StatusCode.INVALID_ARGUMENT, kw
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(pb.SearchRequest(model=CNN_MODEL, image=image, min_verdict=pb.VERDICT_EXACT), timeout=30)
    assert "calibrat" in err.value.details() and "min_score" in err.value.details()
    reply = calibrated.upsert([item("bad-policy", image, policy=9),
                               item("uncalibrated", image, pb.DUPLICATE_POLICY_FLAG, model=CNN_MODEL)])
    assert reply.upserted == 0 and [e.code for e in reply.errors] == ["INVALID_ARGUMENT"] * 2
    assert code_of(lambda: stub.Embed(pb.EmbedRequest(model=VIT_MODEL), timeout=30)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.Embed(pb.EmbedRequest(model=VIT_MODEL, images=[image] * 65), timeout=30)) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(lambda: stub.Embed(pb.EmbedRequest(model=VIT_MODEL, images=[b"not an image"]), timeout=30)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    raw = grpc.insecure_channel(calibrated.process.address).unary_stream(
        "/visualsearch.v1.SearchService/FindDuplicates")
    assert code_of(lambda: list(raw(b"\xff\xff\xff", timeout=30))) == grpc.StatusCode.INVALID_ARGUMENT
    for req in (pb.FindDuplicatesRequest(model=VIT_MODEL, min_score=2.0), pb.FindDuplicatesRequest(model=CNN_MODEL),
                pb.FindDuplicatesRequest(model=VIT_MODEL, neighbours=-3)):
        assert code_of(lambda req=req: list(stub.FindDuplicates(req, timeout=30))) == \
            grpc.StatusCode.INVALID_ARGUMENT, req


# ------------------------------------------------------------------------------------------ bad calibrations
def test_a_missing_corrupt_or_foreign_calibration_never_stops_plain_search(calibrated):
    good = calibrated.calibrate(near=0.9, exact=0.99)
    saved = calibrated.path.read_bytes()

    def vit_info() -> pb.ModelInfo:
        models = calibrated.stub.ListModels(pb.ListModelsRequest(), timeout=30).models
        return next(m for m in models if m.name == VIT_MODEL)

    info = vit_info()
    assert info.HasField("calibration") and not info.note
    assert info.calibration.near_duplicate_min_score == pytest.approx(good.near_duplicate.min_score)
    assert info.calibration.version == good.version
    cnn = next(m for m in calibrated.stub.ListModels(pb.ListModelsRequest(), timeout=30).models
               if m.name == CNN_MODEL)
    assert not cnn.HasField("calibration") and "calibrate" in cnn.note
    doc = json.loads(saved)
    broken = {"corrupt": b'{"format": "visualsearch.calib', "foreign": json.dumps({**doc, "model": "other"}).encode(),
              "future": json.dumps({**doc, "format_version": 99}).encode(), "missing": None}
    try:
        for why, content in broken.items():
            if content is None:
                calibrated.path.unlink()
            else:
                calibrated.path.write_bytes(content)
            info = vit_info()
            assert not info.HasField("calibration") and info.note.startswith("no verdicts"), why
            reply = calibrated.stub.Search(pb.SearchRequest(model=VIT_MODEL, image=png_bytes(fmnist(0)), top_k=3),
                                           timeout=30)
            assert reply.hits and all(h.verdict == pb.VERDICT_UNSPECIFIED for h in reply.hits), why
    finally:
        calibrated.path.write_bytes(saved)


def test_export_puts_the_committed_calibration_beside_the_model(exported_repository):
    repo, _ = exported_repository
    from extractors.registry import committed_calibration

    for model in (VIT_MODEL, CNN_MODEL):
        source, served = committed_calibration(model), repo / model / "calibration.json"
        assert source.exists(), f"{model}'s calibration is committed (vsearch calibrate)"
        assert served.read_bytes() == source.read_bytes()


