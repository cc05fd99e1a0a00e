"""Search-by-image through the gateway (Triton + Milvus behind it): QPS and p50/p99 at several
concurrencies, with the per-stage breakdown the gateway reports (decode, embed, search, overhead)."""

from __future__ import annotations

import argparse
import io
import threading
import time

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from clients.indexing import index_images
from clients.sdk import SearchClient
from extractors.datasets import load_fashion_mnist
from server.launchers.stack import Stack
from server.launchers.triton import free_port
from server.settings import Settings
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

console = Console()


def query_images(n: int = 64) -> list[bytes]:
    ds = load_fashion_mnist("test")
    out = []
    for i in range(n):
        buf = io.BytesIO()
        ds.pil(i).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def load(address: str, model: str, images: list[bytes], concurrency: int, seconds: float) -> dict:
    stop = time.perf_counter() + seconds
    rows: list[tuple[float, float, float, float, float]] = []  # client ms, decode, embed, search, total
    errors = [0]
    lock = threading.Lock()

    def worker(w: int) -> None:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))
        i = w
        local = []
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                r = stub.Search(pb.SearchRequest(model=model, image=images[i % len(images)], top_k=10), timeout=30)
                t = r.timings
                local.append(((time.perf_counter() - t0) * 1e3, t.decode_ms, t.embed_ms, t.search_ms, t.total_ms))
            except grpc.RpcError:
                errors[0] += 1
            i += concurrency
        with lock:
            rows.extend(local)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    a = np.asarray(rows)
    pct = lambda col, q: round(float(np.percentile(a[:, col], q)), 2)  # noqa: E731
    overhead = a[:, 4] - a[:, 1] - a[:, 2] - a[:, 3]
    return {"concurrency": concurrency, "requests": len(rows), "errors": errors[0],
            "qps": round(len(rows) / elapsed, 1), "p50_ms": pct(0, 50), "p99_ms": pct(0, 99),
            "decode_p50_ms": pct(1, 50), "embed_p50_ms": pct(2, 50), "search_p50_ms": pct(3, 50),
            "gateway_total_p50_ms": pct(4, 50), "gateway_overhead_p50_ms": round(float(np.median(overhead)), 2),
            "network_and_client_p50_ms": round(float(np.median(a[:, 0] - a[:, 4])), 2)}


def run(n_index: int = 10000, seconds: float = 10.0, concurrencies=(1, 16)) -> dict:
    settings = Settings()
    model = settings.models[0]
    results: dict = {"model": model, "indexed": n_index, "runs": []}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(milvus_data_dir=f"{tmp}/milvus")
        with Stack(settings, gateway_port=free_port()) as stack:
            with SearchClient(stack.gateway.address) as client:
                results["index"] = index_images(client, None, "fashion-mnist", model, n_index, batch_size=128)
            images = query_images()
            load(stack.gateway.address, model, images, 4, 2.0)  # warm-up
            for c in concurrencies:
                results["runs"].append(load(stack.gateway.address, model, images, c, seconds))
    table = Table(title=f"search by image through the gateway ({model}, {n_index} items indexed)")
    cols = ["concurrency", "qps", "p50_ms", "p99_ms", "decode_p50_ms", "embed_p50_ms", "search_p50_ms",
            "gateway_overhead_p50_ms", "errors"]
    for col in cols:
        table.add_column(col)
    for r in results["runs"]:
        table.add_row(*[str(r[c]) for c in cols])
    console.print(table)
    console.print(f"written to {write_result('gateway_search', results)}")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n-index", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    a = p.parse_args()
    run(a.n_index, a.seconds, tuple(a.concurrency))
