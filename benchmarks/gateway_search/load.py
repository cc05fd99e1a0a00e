"""The measured load: PNG queries sent to the gateway's Search (``gateway_load``), and the same queries sent by a
script that calls Triton and Milvus itself, one query at a time like the gateway's callers (``direct_load``)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable

import grpc
import numpy as np

from benchmarks.common import png_bytes
from benchmarks.cpu import CpuMeter
from benchmarks.load import drive
from extractors.datasets import load_fashion_mnist
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from server.settings import Settings
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

TOP_K = 10  # results per query, with their metadata
WARMUP_S = 1.0  # before each row: channels, thread pools, caches


def query_images(n: int) -> list[bytes]:
    """PNG bytes of Fashion-MNIST test images: what a client would send."""
    ds = load_fashion_mnist("test")
    return [png_bytes(ds.pil(i)) for i in range(n)]


async def _row(call: Callable[[int], Awaitable[tuple]], n_items: int, concurrency: int, seconds: float,
               meter: CpuMeter, rate: float | None = None) -> tuple[dict, list[tuple]]:
    """A warm-up, then the measured drive: its row (throughput, latency, CPU per query) and the calls' timings."""
    await drive(call, n_items, concurrency, WARMUP_S)
    meter.start()
    rows, errors, elapsed = await drive(call, n_items, concurrency, seconds, rate)
    cpu = meter.stop()
    a = np.asarray(rows, dtype=np.float64)
    n = max(len(rows), 1)
    out = {"concurrency": concurrency, "requests": len(rows), "errors": errors, "seconds": round(elapsed, 2),
           "qps": round(len(rows) / elapsed, 1),
           "p50_ms": round(float(np.percentile(a[:, 0], 50)), 2) if len(rows) else None,
           "p99_ms": round(float(np.percentile(a[:, 0], 99)), 2) if len(rows) else None,
           "cpu_ms_per_query": {k: round(v * 1e3 / n, 3) for k, v in cpu.items()}}
    out["cpu_ms_per_query_total"] = round(sum(out["cpu_ms_per_query"].values()), 3)
    return out, rows


async def gateway_load(address: str, model: str, images: list[bytes], concurrency: int, seconds: float,
                       meter: CpuMeter, rate: float | None = None) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        async def call(i: int):
            r = await stub.Search(pb.SearchRequest(model=model, image=images[i], top_k=TOP_K), timeout=30)
            t = r.timings
            return t.decode_ms, t.embed_ms, t.search_ms, t.total_ms

        out, rows = await _row(call, len(images), concurrency, seconds, meter, rate)
        out["offered_qps"] = rate
    if rows:
        a = np.asarray(rows, dtype=np.float64)
        overhead = a[:, 4] - a[:, 1] - a[:, 2] - a[:, 3]
        out.update({f"{k}_p50_ms": round(float(np.median(a[:, j])), 3)
                    for j, k in ((1, "decode"), (2, "embed"), (3, "search"), (4, "gateway_total"))})
        out["gateway_overhead_p50_ms"] = round(float(np.median(overhead)), 3)
        out["network_and_client_p50_ms"] = round(float(np.median(a[:, 0] - a[:, 4])), 3)
    return out


async def direct_load(triton_url: str, milvus_uri: str, model: str, images: list[bytes], concurrency: int,
                      seconds: float, meter: CpuMeter, settings: Settings) -> dict:
    """The baseline: this script decodes, calls Triton and Milvus itself, one query per call, no gateway; it
    searches with the ef the gateway would use under ``settings``."""
    import tritonclient.grpc.aio as tclient
    from PIL import Image
    from pymilvus import MilvusClient

    from server.vector_store.milvus import METADATA_FIELD, METRIC, collection_name

    triton = tclient.InferenceServerClient(triton_url)
    milvus = MilvusClient(uri=milvus_uri, dedicated=True)
    collection = collection_name(model)
    params = {"metric_type": METRIC, "params": {"ef": max(settings.hnsw_ef, TOP_K)}}

    def decode(data: bytes) -> np.ndarray:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)[None].copy()

    async def call(i: int):
        pixels = decode(images[i])
        inp = tclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels)
        res = await triton.infer(model, [inp], outputs=[tclient.InferRequestedOutput(EMBEDDING_OUTPUT)])
        vec = res.as_numpy(EMBEDDING_OUTPUT)
        await asyncio.to_thread(milvus.search, collection, data=vec.tolist(), limit=TOP_K,
                                output_fields=[METADATA_FIELD], search_params=params, consistency_level="Bounded")
        return ()

    try:
        return (await _row(call, len(images), concurrency, seconds, meter))[0]
    finally:
        await triton.close()
        milvus.close()
