"""The in-process ONNX Runtime embedder (``VSEARCH_RUNTIME=onnxruntime``): a gateway with no Triton, on the same
exported repository and Milvus, gives the embeddings Triton gives and finds what a Triton-backed gateway stored."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from clients.sdk import SearchClient
from extractors.datasets import load_fashion_mnist
from launchers.gateway import GatewayProcess
from launchers.ports import free_port
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import CNN_MODEL, SERVED_MODELS, VIT_MODEL

OFFSET = 9300  # Fashion-MNIST test images no other module stores


@pytest.fixture(scope="module")
def onnxruntime_gateway(milvus_server, exported_repository):
    env = {"VSEARCH_RUNTIME": "onnxruntime", "VSEARCH_MODEL_REPOSITORY": str(exported_repository[0]),
           "VSEARCH_MODELS": json.dumps(SERVED_MODELS)}
    # No Triton listens at this address: every embedding must come from the gateway's own process.
    with GatewayProcess([f"127.0.0.1:{free_port()}"], milvus_server.uri, env=env) as process:
        yield process


def test_same_models_and_embeddings_as_triton(onnxruntime_gateway, gateway):
    ort_client, triton_client = SearchClient(onnxruntime_gateway.address), SearchClient(gateway.address)
    ort_models = {m.name: (m.dim, m.input_size) for m in ort_client.list_models()}
    assert ort_models == {m.name: (m.dim, m.input_size) for m in triton_client.list_models()}
    ds = load_fashion_mnist("test").subset(range(OFFSET, OFFSET + 8))
    images = [png_bytes(ds.pil(i)) for i in range(len(ds))]
    for model in (VIT_MODEL, CNN_MODEL):
        a, b = ort_client.embed(model, images), triton_client.embed(model, images)
        assert np.min(np.sum(a * b, axis=1)) > 0.9999, model
    ort_client.close()
    triton_client.close()


def test_finds_what_a_triton_gateway_stored_and_explains(onnxruntime_gateway, gateway):
    ids = gateway.index_fashion_mnist(6, offset=OFFSET + 10)
    client = SearchClient(onnxruntime_gateway.address)
    ds = load_fashion_mnist("test").subset(range(OFFSET + 10, OFFSET + 16))
    # Another gateway's fresh writes reach this one's searches when Milvus makes them visible (bounded staleness)
    deadline = time.monotonic() + 30
    while (not (result := client.search(VIT_MODEL, image=png_bytes(ds.pil(2)), top_k=3, explain=True)).hits
           or result.hits[0].id != ids[2]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert result.hits[0].id == ids[2] and result.hits[0].score > 0.999
    assert result.hits[0].explanation is not None  # patch contributions from the full graph
    client.close()
