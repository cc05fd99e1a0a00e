"""The run. Part one, per model, in one process with ONNX Runtime as Triton's python backend runs it
(``export.onnx_cpu.build_session``): the bare embedding export, the served graph cut to the embedding (what plain
searches ask Triton for) and the served graph with ``patch_contributions``, at batch 1 and 16, in interleaved rounds.
Part two, through the real stack (Triton, Milvus, gateway): the latency of one Search, top 10, sequential, plain /
explain / explain_png, interleaved."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc

from benchmarks.common import console, finish, loadavg, png_bytes
from benchmarks.embedding.timing import interleaved
from export.onnx_cpu import build_session
from export.onnx_export import export_onnx
from export.parity import real_images
from extractors.datasets import load_fashion_mnist, load_photos
from extractors.registry import get_spec
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME, PATCH_CONTRIBUTIONS_OUTPUT
from launchers.ports import free_port
from launchers.stack import Stack
from server.settings import Settings
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

NAME = "explain"
BATCHES = (1, 16)
TOP_K = 10
VARIANTS = ("plain", "explain", "explain_png")


def graph_costs(model: str, budget_s: float, min_rounds: int, threads: int) -> dict:
    """Seconds per call (p50, best) of the three sessions at each batch size."""
    size = get_spec(model).input_size
    with tempfile.TemporaryDirectory() as tmp:
        bare_path = export_onnx(model, Path(tmp) / "bare.onnx", explain=False)
        served_path = export_onnx(model, Path(tmp) / "served.onnx")
        bare = build_session(str(bare_path), threads, outputs=[EMBEDDING_OUTPUT])
        plain = build_session(str(served_path), threads, outputs=[EMBEDDING_OUTPUT])
        full = build_session(str(served_path), threads)
    out = {}
    for batch in BATCHES:
        x = real_images(size, batch)
        fns = {"bare": lambda x=x: bare.run([EMBEDDING_OUTPUT], {INPUT_NAME: x}),
               "served_plain": lambda x=x: plain.run([EMBEDDING_OUTPUT], {INPUT_NAME: x}),
               "served_explain": lambda x=x: full.run([EMBEDDING_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT], {INPUT_NAME: x})}
        times = interleaved(fns, budget_s, min_rounds)
        row = {k: {"p50_ms": round(v["p50_s"] * 1e3, 3), "best_ms": round(v["best_s"] * 1e3, 3), "calls": v["calls"]}
               for k, v in times.items()}
        row["plain_vs_bare"] = round(times["served_plain"]["p50_s"] / times["bare"]["p50_s"], 3)
        row["explain_vs_bare"] = round(times["served_explain"]["p50_s"] / times["bare"]["p50_s"], 3)
        out[str(batch)] = row
        console.log(f"{model} batch {batch}: served plain {row['plain_vs_bare']}x bare, explain "
                    f"{row['explain_vs_bare']}x")
    return out


def corpus(model: str, n: int) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """Items to index and query images (stored images, so every search has real hits with thumbnails)."""
    if get_spec(model).input_size <= 32:
        ds = load_fashion_mnist("test").subset(range(n))
        items = [(ds.ids[i], png_bytes(ds.pil(i))) for i in range(n)]
    else:
        photos = load_photos()
        items = [(photos.ids[i], png_bytes(photos.pil(i))) for i in range(min(n, len(photos)))]
    return items, [data for _, data in items[:8]]


def search_costs(stub, model: str, queries: list[bytes], budget_s: float, min_rounds: int) -> dict:
    def search(variant: str, k: list[int] = [0]) -> None:  # noqa: B006 - the next query image, round-robin
        k[0] += 1
        stub.Search(pb.SearchRequest(model=model, image=queries[k[0] % len(queries)], top_k=TOP_K,
                                     include_thumbnails=True, explain=variant != "plain",
                                     explain_png=variant == "explain_png"), timeout=60)

    times = interleaved({v: (lambda v=v: search(v)) for v in VARIANTS}, budget_s, min_rounds)
    return {v: {"p50_ms": round(t["p50_s"] * 1e3, 2), "best_ms": round(t["best_s"] * 1e3, 2), "calls": t["calls"]}
            for v, t in times.items()}


def run(quick: bool = False) -> dict:
    settings = Settings()
    models = list(settings.models)
    budget_s, min_rounds = (1.0, 3) if quick else (20.0, 30)
    result: dict = {"quick": quick, "models": models, "batches": list(BATCHES), "top_k": TOP_K,
                    "loadavg_1m": {"start": loadavg()}, "graph": {}, "search": {}}
    for model in models:
        result["graph"][model] = graph_costs(model, budget_s, min_rounds, threads=0)
    with tempfile.TemporaryDirectory() as tmp, Stack(settings.model_copy(update={
            "milvus_data_dir": Path(tmp) / "milvus"}), gateway_port=free_port()) as stack:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(stack.address))
        for model in models:
            items, queries = corpus(model, 64 if quick else 500)
            reply = stub.Upsert(iter(pb.UpsertRequest(model=model, id=i, image=data) for i, data in items),
                                timeout=600)
            assert not reply.errors, reply.errors[:3]
            result["search"][model] = search_costs(stub, model, queries, budget_s, min_rounds)
            console.log(f"{model}: {result['search'][model]}")
    result["loadavg_1m"]["end"] = loadavg()
    return finish(NAME, result)
