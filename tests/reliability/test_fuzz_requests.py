"""Fuzzing every request field against the real gateway (the session's ``gateway`` fixture: reads fuzz freely,
writes only under ids with this run's own prefix). Every case must get one of the statuses that say what to fix,
never UNKNOWN or INTERNAL, and the gateway must still serve a normal search afterwards."""

from __future__ import annotations

import io
import os
import struct
import uuid
import zlib

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from extractors.datasets import load_fashion_mnist
from launchers.gateway import GatewayProcess
from server.settings import Settings
from server.validation import InvalidRequest, check_id
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import VIT_MODEL
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
LIMITS = Settings()
RUN = uuid.uuid4().hex[:8]
PREFIX = f"fz-{RUN}-"
CASES = {"n": 0}
WRITTEN: set[str] = set()  # ids this module may have upserted into the shared gateway: deleted at the end


SCALE = float(os.environ.get("VSEARCH_FUZZ_SCALE", "1"))  # `make soak` multiplies every example count


def fuzz(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    suppress_health_check=list(HealthCheck), database=None)


INJECTIONS = ['" or 1==1 or "', "' or 1==1 or '", 'x" || id != "', "0) or (1==1", "label > 0 or true",
              "\\\" or true or \\\"", "]) or id like \"%", "\x00", "\n", "${jndi:x}", "%", "*", "' ; drop ", "\\",
              "a\"b'c`d", "true", "[1,2", "id in [\"a\"]"]


def call(method, request, timeout: float = 60, metadata=None):
    """The call's status code and its reply (None on failure); counts the case."""
    CASES["n"] += 1
    try:
        return OK, method(request, timeout=timeout, metadata=metadata)
    except grpc.RpcError as e:
        assert e.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (e.code(), e.details())
        return e.code(), None


def expect(method, request, allowed, timeout: float = 60):
    code, reply = call(method, request, timeout)
    assert code in allowed, (code, str(request)[:300])
    return code, reply


@pytest.fixture(scope="module")
def stub(gateway) -> search_pb2_grpc.SearchServiceStub:
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    return search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(gateway.address, options=options))


def accepted(item_id: str) -> bool:
    """The gateway's own id rule: an id it accepted can be looked up and deleted."""
    try:
        check_id(item_id, LIMITS.max_id_length)
        return True
    except InvalidRequest:
        return False


@pytest.fixture(scope="module", autouse=True)
def clean_up_what_we_wrote(gateway):
    yield
    ids = sorted(i for i in WRITTEN if accepted(i) and i.startswith(PREFIX))
    stub = gateway.stub()
    for k in range(0, len(ids), 500):
        stub.Delete(pb.DeleteRequest(model=VIT_MODEL, ids=ids[k:k + 500]), timeout=60)
    left = stub.Get(pb.GetRequest(model=VIT_MODEL, ids=ids[:LIMITS.max_top_k]), timeout=60).items
    assert not left, [i.id for i in left]


@pytest.fixture(scope="module")
def dim(stub) -> int:
    return {m.name: m.dim for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}[VIT_MODEL]


@pytest.fixture(scope="module")
def seeded(stub, dim) -> list[str]:
    """A few items of our own, with metadata, so ids, filters and output fields find something."""
    rng = np.random.default_rng(0)
    items = [pb.UpsertRequest(model=VIT_MODEL, id=f"{PREFIX}seed{i}", vector=pb.Vector(values=rng.normal(size=dim)),
                              metadata={"label": pb.Value(int_value=i % 10), "tag": pb.Value(string_value=f"t{i}"),
                                        "class_name": pb.Value(string_value='a"b\'c')})
             for i in range(20)]
    WRITTEN.update(i.id for i in items)
    reply = stub.Upsert(iter(items), timeout=60)
    assert reply.upserted == 20 and not reply.errors
    return [i.id for i in items]


@pytest.fixture(scope="module")
def sample_png() -> bytes:
    return png_bytes(load_fashion_mnist("test").pil(0))


@pytest.fixture(scope="module")
def sample_jpeg() -> bytes:
    buf = io.BytesIO()
    load_fashion_mnist("test").pil(1).convert("RGB").resize((96, 96)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ strategies

floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
top_ks = st.one_of(st.integers(-5, LIMITS.max_top_k + 5), st.sampled_from([0, -1, 10**9, 2**31 - 1, -2**31]))
ids = st.one_of(st.text(max_size=300), st.sampled_from(["", " ", "\x00", "\x1f", "a" * 256, "a" * 257, "é" * 300,
                                                        "\u202e", "../../etc/passwd", *INJECTIONS]))
scalar_values = st.one_of(
    st.builds(lambda s: pb.Value(string_value=s), st.one_of(st.text(max_size=100), st.sampled_from(INJECTIONS))),
    st.builds(lambda i: pb.Value(int_value=i), st.integers(-2**63, 2**63 - 1)),
    st.builds(lambda f: pb.Value(double_value=f), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda b: pb.Value(bool_value=b), st.booleans()),
    st.just(pb.Value()))
values = st.one_of(scalar_values, st.builds(lambda vs: pb.Value(list_value=pb.ValueList(values=vs)),
                                            st.lists(scalar_values, max_size=5)))
fields = st.one_of(st.sampled_from(LIMITS.filter_fields), st.text(max_size=40), st.sampled_from(INJECTIONS))
filters = st.lists(st.builds(lambda f, op, v: pb.FilterClause(field=f, op=op, value=v), fields,
                             st.integers(-2, 9), values), max_size=3)
models = st.one_of(st.just(VIT_MODEL), st.text(max_size=60), st.sampled_from(["", VIT_MODEL + " ", VIT_MODEL.upper(),
                                                                               "../" + VIT_MODEL, "*"]))


def vectors(dim: int):
    lengths = st.one_of(st.sampled_from([0, 1, dim - 1, dim, dim, dim, dim + 1]), st.integers(0, 2 * dim))
    return lengths.flatmap(lambda n: st.one_of(
        st.lists(floats32, min_size=n, max_size=n),
        st.lists(st.floats(-10, 10, width=32), min_size=n, max_size=n),
        st.sampled_from([[0.0] * n, [3e38] * n, [1e-45] * n, [-1.0] * n])))


# ------------------------------------------------------------------------------------------- cheap, many cases


def test_fuzz_vector_queries(stub, dim, seeded):
    @fuzz(500)
    @given(vector=vectors(dim), top_k=top_ks)
    def run(vector, top_k):
        x = np.asarray(vector, dtype=np.float32)
        valid = (len(vector) == dim and np.all(np.isfinite(x)) and np.isfinite(np.linalg.norm(x))
                 and np.linalg.norm(x) > 0 and 0 <= top_k <= LIMITS.max_top_k)
        code, reply = expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=vector),
                                                           top_k=top_k), {OK, INVALID})
        if valid:
            assert code == OK
        if code == OK:
            assert all(np.isfinite(h.score) for h in reply.hits)
    run()


def test_fuzz_ids_in_search_get_and_delete(stub, seeded):
    @fuzz(400)
    @given(item_id=ids, many=st.lists(ids, max_size=5), top_k=top_ks)
    def run(item_id, many, top_k):
        expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, id=item_id, top_k=top_k), {OK, INVALID, NOT_FOUND})
        expect(stub.Get, pb.GetRequest(model=VIT_MODEL, ids=many + [seeded[0]], include_vectors=True), {OK, INVALID})
        # Deletes only touch ids under this run's own prefix.
        expect(stub.Delete, pb.DeleteRequest(model=VIT_MODEL, ids=[f"{PREFIX}del-{i}" for i in many]), {OK, INVALID})
    run()


def test_fuzz_filters_and_output_fields(stub, dim, seeded):
    @fuzz(400)
    @given(clauses=filters, out=st.lists(st.one_of(fields, st.sampled_from(["id", "vector", "*"])), max_size=3),
           top_k=top_ks)
    def run(clauses, out, top_k):
        req = pb.SearchRequest(model=VIT_MODEL, id=seeded[3], top_k=top_k, filters=clauses, output_fields=out)
        expect(stub.Search, req, {OK, INVALID})
    run()


def test_filter_injection_matches_nothing(stub, seeded):
    for text in INJECTIONS:
        for field in ("tag", "class_name"):
            req = pb.SearchRequest(model=VIT_MODEL, id=seeded[0], top_k=50,
                                   filters=[pb.FilterClause(field=field, op=pb.FILTER_OP_EQ,
                                                            value=pb.Value(string_value=text))])
            code, reply = expect(stub.Search, req, {OK, INVALID})
            if code == OK:
                assert reply.hits == [], (field, text, [h.id for h in reply.hits])
    # A quote inside a stored value is matched literally, not parsed.
    req = pb.SearchRequest(model=VIT_MODEL, id=seeded[0], top_k=50, filters=[pb.FilterClause(
        field="class_name", op=pb.FILTER_OP_EQ, value=pb.Value(string_value='a"b\'c'))])
    _, reply = expect(stub.Search, req, {OK})
    assert {h.id for h in reply.hits} >= set(seeded)


def test_fuzz_models(stub, dim):
    @fuzz(200)
    @given(model=models, top_k=top_ks)
    def run(model, top_k):
        req = pb.SearchRequest(model=model, vector=pb.Vector(values=[1.0] * dim), top_k=top_k)
        code, _ = expect(stub.Search, req, {OK, INVALID})
        if model != VIT_MODEL:
            assert code == INVALID
        expect(stub.Get, pb.GetRequest(model=model, ids=["x"]), {OK, INVALID})
    run()


def test_fuzz_upserts(stub, dim):
    metadata = st.dictionaries(st.one_of(st.text(max_size=70), st.sampled_from(["id", "vector", "label", "tag",
                                                                                 "1x", "_ok", "a" * 64, "a" * 65])),
                               values, max_size=4)

    @fuzz(250)
    @given(items=st.lists(st.tuples(ids, vectors(dim), metadata, st.booleans(), st.booleans()), min_size=1,
                          max_size=4))
    def run(items):
        reqs = []
        for suffix, vector, meta, prefixed, huge in items:
            if huge:  # oversized metadata
                meta = {**meta, "tag": pb.Value(string_value="x" * (LIMITS.max_metadata_bytes + 1))}
            item_id = "" if not suffix and not prefixed else PREFIX + suffix  # only ids under our prefix
            reqs.append(pb.UpsertRequest(model=VIT_MODEL, id=item_id, vector=pb.Vector(values=vector),
                                         metadata=meta))
        WRITTEN.update(r.id for r in reqs)
        code, reply = expect(stub.Upsert, iter(reqs), {OK, INVALID, EXHAUSTED})
        if code == OK:
            assert reply.received == len(reqs)
            assert {e.code for e in reply.errors} <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, reply.errors
    run()


def test_batches(stub, dim, sample_png):
    q = pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=[1.0] * dim))
    expect(stub.SearchBatch, pb.SearchBatchRequest(), {INVALID})
    expect(stub.SearchBatch, pb.SearchBatchRequest(queries=[q] * (LIMITS.max_batch_queries + 1)), {EXHAUSTED})
    expect(stub.SearchBatch, pb.SearchBatchRequest(queries=[q] * LIMITS.max_batch_queries), {OK})

    @fuzz(60)
    @given(queries=st.lists(st.one_of(
        st.builds(lambda v, k: pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=v), top_k=k), vectors(dim),
                  top_ks),
        st.builds(lambda i: pb.SearchRequest(model=VIT_MODEL, id=i), ids),
        st.builds(lambda m, b: pb.SearchRequest(model=m, image=b), models,
                  st.one_of(st.binary(max_size=64), st.just(sample_png))),
        st.just(pb.SearchRequest())), min_size=1, max_size=6))
    def run(queries):
        expect(stub.SearchBatch, pb.SearchBatchRequest(queries=queries), {OK, INVALID, NOT_FOUND, EXHAUSTED})
    run()


def test_unknown_fields_are_ignored(gateway, stub, dim):
    channel = grpc.insecure_channel(gateway.address)
    raw = channel.unary_unary("/visualsearch.v1.SearchService/Search")  # bytes in, bytes out
    body = pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=[1.0] * dim), top_k=2).SerializeToString()
    unknown = bytes([0xF8, 0x07, 0x01]) + bytes([0x82, 0x7D, 0x03]) + b"abc"  # varint field 127, bytes field 2000
    CASES["n"] += 1
    reply = pb.SearchResponse.FromString(raw(body + unknown, timeout=30))
    assert reply.model == VIT_MODEL


# -------------------------------------------------------------------------------------------------------- images


def test_fuzz_random_bytes_as_images(stub, sample_png, sample_jpeg):
    @fuzz(150)
    @given(data=st.one_of(st.binary(max_size=2048),
                          st.builds(lambda h, b: h + b, st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0",
                                                                          b"GIF89a", b"BM", b"II*\x00", b"RIFF"]),
                                    st.binary(max_size=512))))
    def run(data):
        expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, image=data), {INVALID, EXHAUSTED})
    run()


def test_fuzz_truncated_and_corrupted_images(stub, sample_png, sample_jpeg):
    @fuzz(120)
    @given(source=st.sampled_from([sample_png, sample_jpeg]), cut=st.floats(0, 1), flip=st.integers(0, 10**6),
           corrupt=st.booleans())
    def run(source, cut, flip, corrupt):
        data = bytearray(source[:max(1, int(len(source) * cut))])
        if corrupt:
            data[flip % len(data)] ^= 0xFF
        expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, image=bytes(data), top_k=1), {OK, INVALID})
    run()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 30000) -> bytes:
    """A valid ~100 kB 1-bit PNG of side x side black pixels (900 megapixels)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 1000) for _ in range(side // 1000)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def odd_images() -> dict[str, tuple[bytes, set]]:
    base = Image.linear_gradient("L").resize((64, 48))
    rgb = Image.merge("RGB", [base, base.rotate(90), base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    frames = [rgb, rgb.rotate(45), rgb.rotate(90)]
    anim = io.BytesIO()
    frames[0].save(anim, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    ok = {OK}
    return {
        "1x1": (encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), ok),
        "1x5000 strip": (encode(Image.new("L", (1, 5000)), "PNG"), ok),
        "cmyk jpeg": (encode(rgb.convert("CMYK"), "JPEG"), ok),
        "16-bit png": (encode(Image.fromarray((np.arange(64 * 48, dtype=np.uint16) * 21).reshape(48, 64)), "PNG"),
                       ok),
        "palette png with transparency": (encode(rgb.convert("P"), "PNG", transparency=0), ok),
        "la png": (encode(base.convert("LA"), "PNG"), ok),
        "rgba webp": (encode(rgb.convert("RGBA"), "WEBP"), ok),
        "1-bit bmp": (encode(base.convert("1"), "BMP"), ok),
        "float tiff": (encode(base.convert("F"), "TIFF"), ok),
        "animated gif": (anim.getvalue(), ok),
        "exif-rotated jpeg": (encode(rgb, "JPEG", exif=exif), ok),
        "progressive jpeg": (encode(rgb, "JPEG", progressive=True), ok),
        "30000x30000 png bomb": (png_bomb(), {EXHAUSTED}),
        "over max_image_bytes": (b"\x89PNG\r\n\x1a\n" + b"\x00" * LIMITS.max_image_bytes, {EXHAUSTED}),
        "empty": (b"", {INVALID}),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', {INVALID}),
        "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", {INVALID}),
        "ico": (encode(rgb, "ICO"), {INVALID}),
    }


ODD = odd_images()


@pytest.mark.parametrize("name", list(ODD))
def test_odd_images(stub, name):
    data, allowed = ODD[name]
    expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, image=data, top_k=1), allowed)
    WRITTEN.add(f"{PREFIX}img-{name}")
    code, reply = expect(stub.Upsert, iter([pb.UpsertRequest(model=VIT_MODEL, id=f"{PREFIX}img-{name}", image=data)]),
                         {OK})
    assert [e.code for e in reply.errors] == ([] if allowed == {OK} else [next(iter(allowed)).name])


def test_a_message_over_the_grpc_limit_is_resource_exhausted(triton, milvus_server):
    env = {"VSEARCH_MAX_IMAGE_BYTES": str(1 << 20), "VSEARCH_MAX_BATCH_QUERIES": "2"}  # gRPC max: 3 MiB
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env=env) as process:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(process.address))
        expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, image=b"\x00" * (4 << 20)), {EXHAUSTED})
        expect(stub.Search, pb.SearchRequest(model=VIT_MODEL, image=b"\x00" * ((1 << 20) + 1)), {EXHAUSTED})


def test_fuzz_raw_message_bytes(gateway):
    """Bytes that are not a valid message at all, on every RPC."""
    channel = grpc.insecure_channel(gateway.address)
    methods = {name: channel.unary_unary(f"/visualsearch.v1.SearchService/{name}")
               for name in ("Search", "SearchBatch", "Get", "Delete", "ListModels")}
    upsert = channel.stream_unary("/visualsearch.v1.SearchService/Upsert")

    @fuzz(100)
    @given(name=st.sampled_from(sorted(methods)), body=st.binary(max_size=256))
    def run(name, body):
        CASES["n"] += 1
        for method, request in ((methods[name], body), (upsert, iter([body]))):
            try:
                method(request, timeout=30)
            except grpc.RpcError as e:
                assert e.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (name, body, e.code(),
                                                                                             e.details())
    run()


# ------------------------------------------------------------------------------------------------------- after


def test_the_gateway_still_serves_after_the_fuzz(gateway, stub, seeded, sample_png, record_property):
    reply = stub.Search(pb.SearchRequest(model=VIT_MODEL, image=sample_png, top_k=3), timeout=30)
    assert reply.model == VIT_MODEL and len(reply.hits) == 3
    assert gateway.process.proc.poll() is None
    record_property("fuzz_cases", CASES["n"])
    print(f"\n[fuzz] {CASES['n']} calls")
