"""Security on real processes: TLS with a certificate made here, and the token on read RPCs.

(Mutating RPCs behind the token are covered by tests/server/test_gateway.py::test_token_guards_mutating_rpcs.)"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk import SearchClient, SearchError
from launchers.gateway import GatewayProcess
from tests.fixtures.models import VIT_DIM, VIT_MODEL
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

TOKEN = "r3ad-s3cret"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (openssl CLI; `cryptography` is not in the venv)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def vit_dim(gateway) -> int:
    models = {m.name: m for m in gateway.stub().ListModels(pb.ListModelsRequest(), timeout=30).models}
    return models[VIT_MODEL].dim


def test_tls_client_searches_and_a_plaintext_client_is_refused(triton, milvus_server, tmp_path, vit_dim):
    cert, key = make_certificate(tmp_path)
    env = {"VSEARCH_TLS_CERT": str(cert), "VSEARCH_TLS_KEY": str(key)}
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env=env) as process:
        with SearchClient(process.address, tls=True, root_certificates=cert.read_bytes(), retries=0) as client:
            result = client.search(VIT_MODEL, vector=[1.0] * vit_dim, top_k=3)
            assert result.model == VIT_MODEL
        with SearchClient(process.address, timeout=5, retries=0) as plain, pytest.raises(SearchError) as e:
            plain.search(VIT_MODEL, vector=[1.0] * vit_dim, top_k=3)
        assert e.value.code == "UNAVAILABLE"
        # A TLS client that does not trust this certificate (system roots) is refused too.
        with SearchClient(process.address, tls=True, timeout=5, retries=0) as untrusted, \
                pytest.raises(SearchError) as e:
            untrusted.search(VIT_MODEL, vector=[1.0] * vit_dim, top_k=3)
        assert e.value.code == "UNAVAILABLE"


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buf, "PNG")
    return buf.getvalue()


def test_auth_reads_requires_the_token_on_every_read_rpc(triton, milvus_server, vit_dim):
    env = {"VSEARCH_AUTH_TOKEN": TOKEN, "VSEARCH_AUTH_READS": "true"}
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env=env) as process:
        channel = grpc.insecure_channel(process.address)
        stub = search_pb2_grpc.SearchServiceStub(channel)
        search = pb.SearchRequest(model=VIT_MODEL, vector=pb.Vector(values=[1.0] * vit_dim), top_k=3)
        reads = [
            (stub.Search, search),
            (stub.SearchBatch, pb.SearchBatchRequest(queries=[search])),
            (stub.Get, pb.GetRequest(model=VIT_MODEL, ids=["nope"])),
            (stub.ListModels, pb.ListModelsRequest()),
            (stub.Embed, pb.EmbedRequest(model=VIT_MODEL, images=[_png()])),
            (lambda request, **kw: list(stub.FindDuplicates(request, **kw)),
             pb.FindDuplicatesRequest(model=VIT_MODEL, min_score=0.9999)),
        ]
        for method, request in reads:
            for metadata in (None, [("authorization", "Bearer wrong")], [("authorization", TOKEN)]):
                with pytest.raises(grpc.RpcError) as e:
                    method(request, timeout=30, metadata=metadata)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method, metadata)
            method(request, timeout=30, metadata=[("authorization", f"Bearer {TOKEN}")])
        # Health stays open to load balancers.
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        with SearchClient(process.address, token=TOKEN, retries=0) as client:
            assert client.search(VIT_MODEL, vector=[1.0] * vit_dim, top_k=3).model == VIT_MODEL


def test_an_id_is_data_never_part_of_the_expression(gateway):
    stub = gateway.stub()
    prefix = f"inj-{uuid.uuid4().hex[:8]}"
    victim = f"{prefix}-victim"
    reply = stub.Upsert(iter([pb.UpsertRequest(model=VIT_MODEL, id=victim, vector=pb.Vector(values=[1.0] * VIT_DIM))]),
                        timeout=60)
    assert reply.upserted == 1
    injected = f"{prefix}-nothing'] or id in ['{victim}"  # a valid id (no control characters, < 256 chars)
    try:
        items = stub.Get(pb.GetRequest(model=VIT_MODEL, ids=[injected]), timeout=30).items
        assert [i.id for i in items] == [], "Get of an id that does not exist returned another item"
        deleted = stub.Delete(pb.DeleteRequest(model=VIT_MODEL, ids=[injected]), timeout=30).deleted
        assert deleted == 0, "Delete of an id that does not exist deleted another item"
    finally:
        stub.Delete(pb.DeleteRequest(model=VIT_MODEL, ids=[victim]), timeout=30)
