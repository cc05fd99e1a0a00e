"""End to end on real processes: the gateway, Triton (from the wheel) and the Milvus server."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from extractors.copies import CopyConfig, make_copies
from extractors.datasets import load_fashion_mnist, load_photos
from launchers.gateway import GatewayProcess
from launchers.ports import free_port
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import CNN_MODEL, VIT_DIM, VIT_MODEL
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

N_FMNIST = 300


@pytest.fixture(scope="module")
def indexed(gateway):
    ids = gateway.index_fashion_mnist(N_FMNIST)
    photos = load_photos()
    reply = gateway.stub().Upsert(iter(
        pb.UpsertRequest(model=CNN_MODEL, id=photos.ids[i], image=png_bytes(photos.pil(i)),
                         metadata={"source": pb.Value(string_value=photos.ids[i].split("/")[0])})
        for i in range(len(photos))), timeout=300)
    assert reply.upserted == len(photos) and not reply.errors
    return ids, photos


def search(stub, **kw) -> pb.SearchResponse:
    return stub.Search(pb.SearchRequest(**kw), timeout=30)


def fmnist_png(i: int) -> bytes:
    return png_bytes(load_fashion_mnist("test").pil(i))


def test_health_is_serving_and_reflection_lists_the_service(gateway):
    channel = grpc.insecure_channel(gateway.address)
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert "visualsearch.v1.SearchService" in names


def test_a_stored_image_finds_itself_first(gateway, indexed):
    ids, _ = indexed
    stub = gateway.stub()
    for i in (0, 17, 123):
        reply = search(stub, model=VIT_MODEL, image=fmnist_png(i), top_k=5)
        assert reply.hits[0].id == ids[i]
        assert reply.hits[0].score > 0.999
        assert len(reply.hits) == 5
        assert reply.timings.decode_ms > 0 and reply.timings.embed_ms > 0 and reply.timings.search_ms > 0
        assert reply.hits[0].metadata["label"].int_value == int(load_fashion_mnist("test").labels[i])


def test_a_strong_copy_of_a_photo_finds_the_original_in_the_top_3(gateway, indexed):
    _, photos = indexed
    stub = gateway.stub()
    found = 0
    targets = [i for i, pid in enumerate(photos.ids) if pid.startswith("foolbox/")][:8]
    for i in targets:
        (copy,) = make_copies(photos.pil(i), 1, seed=7, cfg=CopyConfig.strong(), item_index=i)
        buf = io.BytesIO()
        copy.save(buf, "JPEG", quality=60)
        reply = search(stub, model=CNN_MODEL, image=buf.getvalue(), top_k=3)
        found += photos.ids[i] in [h.id for h in reply.hits]
    assert found >= len(targets) - 1, f"{found}/{len(targets)} copies found their original in the top 3"


def test_search_by_id_and_by_vector_agree_with_search_by_image(gateway, indexed):
    ids, _ = indexed
    stub = gateway.stub()
    by_image = search(stub, model=VIT_MODEL, image=fmnist_png(5), top_k=10)
    by_id = search(stub, model=VIT_MODEL, id=ids[5], top_k=10)
    stored = stub.Get(pb.GetRequest(model=VIT_MODEL, ids=[ids[5]], include_vectors=True), timeout=10).items[0]
    by_vector = search(stub, model=VIT_MODEL, vector=stored.vector, top_k=10)
    assert [h.id for h in by_image.hits] == [h.id for h in by_id.hits] == [h.id for h in by_vector.hits]
    np.testing.assert_allclose([h.score for h in by_id.hits], [h.score for h in by_image.hits], atol=1e-4)


def test_concurrent_searches_share_backend_calls_and_get_the_same_answers(gateway, indexed, triton):
    """32 searches at once are coalesced into a few Triton and Milvus calls; each still gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as tclient

    stub = gateway.stub()
    queries = [fmnist_png(i) for i in range(32)]
    alone = [[h.id for h in search(stub, model=VIT_MODEL, image=q, top_k=5 + i % 3).hits]
             for i, q in enumerate(queries)]
    with tclient.InferenceServerClient(triton.grpc_url) as tc:
        def counts():
            stats = tc.get_inference_statistics(VIT_MODEL, as_json=True)["model_stats"][0]
            return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

        before = counts()
        with ThreadPoolExecutor(32) as pool:
            together = list(pool.map(lambda iq: [h.id for h in search(stub, model=VIT_MODEL, image=iq[1],
                                                                      top_k=5 + iq[0] % 3).hits],
                                     enumerate(queries)))
        inferences, executions = (a - b for a, b in zip(counts(), before, strict=True))
    assert together == alone  # each got its own top_k, in its own order
    assert inferences == 32 and executions < 32


def test_a_bulk_write_is_flushed_so_milvus_seals_it(gateway, indexed, milvus_server):
    """After FLUSH_MIN_ROWS rows and a quiet second the gateway flushes: the rows leave the growing segment
    (searched by brute force) for a sealed one, which Milvus indexes (HNSW) once it holds >= 1,024 rows
    (indexCoord.segment.minSegmentNumRowsToEnableIndex; these 300 are below that, so sealed is what is checked)."""
    import time
    import warnings

    from pymilvus import connections, utility

    from server.vector_store.milvus import collection_name

    connections.connect(alias="flush-test", uri=milvus_server.uri)
    try:
        deadline = time.monotonic() + 60
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                segments = utility.get_query_segment_info(collection_name(VIT_MODEL), using="flush-test")
            sealed = sum(s.num_rows for s in segments if s.state == 3)  # 3 = Sealed
            if sealed >= N_FMNIST or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        connections.disconnect("flush-test")
    assert sealed >= N_FMNIST, [(s.num_rows, s.state, s.index_name) for s in segments]


def test_filters_restrict_the_results(gateway, indexed):
    stub = gateway.stub()
    eq = search(stub, model=VIT_MODEL, image=fmnist_png(0), top_k=20,
                filters=[pb.FilterClause(field="label", op=pb.FILTER_OP_EQ, value=pb.Value(int_value=3))])
    assert eq.hits and all(h.metadata["label"].int_value == 3 for h in eq.hits)
    within = search(stub, model=VIT_MODEL, image=fmnist_png(0), top_k=20, filters=[pb.FilterClause(
        field="class_name", op=pb.FILTER_OP_IN, value=pb.Value(list_value=pb.ValueList(values=[
            pb.Value(string_value="Bag"), pb.Value(string_value="Sandal")])))])
    assert within.hits and {h.metadata["class_name"].string_value for h in within.hits} <= {"Bag", "Sandal"}
    injected = search(stub, model=VIT_MODEL, image=fmnist_png(0), top_k=20, filters=[pb.FilterClause(
        field="class_name", op=pb.FILTER_OP_EQ, value=pb.Value(string_value='Bag" or label >= 0 or class_name == "'))])
    assert len(injected.hits) == 0  # a value is a value, never part of the expression


def test_delete_removes_and_get_reports_what_is_stored(gateway, indexed):
    stub = gateway.stub()
    gateway.index_fashion_mnist(2, offset=9000)
    ids = ["fmnist-test-09000", "fmnist-test-09001"]
    assert len(stub.Get(pb.GetRequest(model=VIT_MODEL, ids=ids), timeout=10).items) == 2
    assert stub.Delete(pb.DeleteRequest(model=VIT_MODEL, ids=ids), timeout=10).deleted == 2
    assert len(stub.Get(pb.GetRequest(model=VIT_MODEL, ids=ids), timeout=10).items) == 0
    with pytest.raises(grpc.RpcError) as e:
        search(stub, model=VIT_MODEL, id=ids[0])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_upsert_is_idempotent_and_reports_bad_items_by_id(gateway, indexed):
    stub = gateway.stub()
    good = pb.UpsertRequest(model=VIT_MODEL, id="fmnist-test-00001", image=fmnist_png(1),
                            metadata={"label": pb.Value(int_value=2)})
    for _ in range(2):  # the same batch twice
        reply = stub.Upsert(iter([good, pb.UpsertRequest(model=VIT_MODEL, id="broken", image=b"not an image"),
                                  pb.UpsertRequest(model=VIT_MODEL, id="", image=fmnist_png(2)), good]), timeout=60)
        assert reply.received == 4 and reply.upserted == 2
        assert {(e.id, e.code) for e in reply.errors} == {("broken", "INVALID_ARGUMENT"), ("", "INVALID_ARGUMENT")}
    # One copy: the id comes back once among its own nearest neighbours, and Get finds one item.
    hits = [h.id for h in search(stub, model=VIT_MODEL, id="fmnist-test-00001", top_k=20).hits]
    assert hits.count("fmnist-test-00001") == 1
    assert len(stub.Get(pb.GetRequest(model=VIT_MODEL, ids=["fmnist-test-00001", "broken"]), timeout=10).items) == 1


def test_every_id_upsert_accepts_can_be_got_and_deleted(gateway, indexed):
    """Quotes, backslashes and spaces are data; DEL is refused up front (a Milvus expression cannot hold it, so an
    item stored under it could never be deleted)."""
    stub = gateway.stub()
    odd = ["q'uote", 'dq"uote', "back\\slash", "sp ace", "\\'] or id in ['x"]
    vec = pb.Vector(values=[1.0] * VIT_DIM)
    reply = stub.Upsert(iter([pb.UpsertRequest(model=VIT_MODEL, id=i, vector=vec) for i in [*odd, "del\x7f"]]),
                        timeout=60)
    assert reply.upserted == len(odd)
    assert [(e.id, e.code) for e in reply.errors] == [("del\x7f", "INVALID_ARGUMENT")]
    assert sorted(i.id for i in stub.Get(pb.GetRequest(model=VIT_MODEL, ids=odd), timeout=10).items) == sorted(odd)
    assert stub.Delete(pb.DeleteRequest(model=VIT_MODEL, ids=odd), timeout=10).deleted == len(odd)
    assert not stub.Get(pb.GetRequest(model=VIT_MODEL, ids=odd), timeout=10).items


def test_list_models(gateway, indexed):
    models = {m.name: m for m in gateway.stub().ListModels(pb.ListModelsRequest(), timeout=10).models}
    assert models[VIT_MODEL].dim == VIT_DIM and models[VIT_MODEL].input_size == 28
    assert models[CNN_MODEL].dim == 1280 and models[CNN_MODEL].count >= 30
    assert models[VIT_MODEL].metric == "COSINE"
    # What each model is for and learnt from, as export wrote it beside the model (model_info.json)
    assert models[VIT_MODEL].domain.startswith("garments") and "Fashion-MNIST" in models[VIT_MODEL].trained_on
    assert models[CNN_MODEL].domain.startswith("photos") and models[CNN_MODEL].trained_on == "ImageNet-1k"


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kwargs, code", [
    (dict(model=VIT_MODEL, image=b"\xff\xd8\xff\xe0 truncated jpeg"), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL, vector=pb.Vector(values=[0.1] * 5)), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL, vector=pb.Vector(values=[float("nan")] * VIT_DIM)), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL, id="fmnist-test-00000", top_k=-1), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL, id="fmnist-test-00000", top_k=10**9), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model="no_such_model", id="x"), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL, id="fmnist-test-00000",
          filters=[pb.FilterClause(field="secret", op=pb.FILTER_OP_EQ, value=pb.Value(int_value=1))]),
     grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(model=VIT_MODEL, id="never-stored"), grpc.StatusCode.NOT_FOUND),
    (dict(model=VIT_MODEL, image=bomb_png()), grpc.StatusCode.RESOURCE_EXHAUSTED),
])
def test_bad_requests_get_the_status_that_says_what_to_fix(gateway, indexed, kwargs, code):
    with pytest.raises(grpc.RpcError) as e:
        search(gateway.stub(), **kwargs)
    assert e.value.code() == code, e.value.details()
    assert e.value.details()


def test_an_impossible_deadline_is_deadline_exceeded(gateway, indexed):
    with pytest.raises(grpc.RpcError) as e:
        gateway.stub().Search(pb.SearchRequest(model=VIT_MODEL, image=fmnist_png(3)), timeout=0.0005)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_data_survives_a_gateway_restart(gateway, indexed):
    ids, _ = indexed
    gateway.process.restart()
    reply = search(gateway.stub(), model=VIT_MODEL, image=fmnist_png(42), top_k=1)
    assert reply.hits[0].id == ids[42]


def stub_for(address: str) -> search_pb2_grpc.SearchServiceStub:
    return search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))


def test_triton_down_is_unavailable_and_health_not_serving(milvus_server):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    process = GatewayProcess([dead], milvus_server.uri, env={"VSEARCH_TRITON_TIMEOUT_S": "2"})
    try:
        process.start(wait=False)
        assert process.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as e:
            stub_for(process.address).Search(pb.SearchRequest(model=VIT_MODEL, image=fmnist_png(0)), timeout=20)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
        assert "unavailable" in e.value.details().lower()
    finally:
        process.stop()


def test_token_guards_mutating_rpcs(triton, milvus_server):
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env={"VSEARCH_AUTH_TOKEN": "s3cret"}) as process:
        stub = stub_for(process.address)
        item = pb.UpsertRequest(model=VIT_MODEL, id="auth-1", image=fmnist_png(0))
        for metadata in (None, [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as e:
                stub.Upsert(iter([item]), timeout=30, metadata=metadata)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Upsert(iter([item]), timeout=30, metadata=[("authorization", "Bearer s3cret")])
        assert ok.upserted == 1
        # Reads stay open unless VSEARCH_AUTH_READS is set.
        assert "auth-1" in [h.id for h in search(stub, model=VIT_MODEL, id="auth-1", top_k=3).hits]
