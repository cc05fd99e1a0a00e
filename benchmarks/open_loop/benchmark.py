"""The run: the stack up with ``Settings()``, the Fashion-MNIST index ready and settled, the bundled photos indexed
(the photo indexing rate), then for each workload the offered rate stepped up with Poisson arrivals; per step the
latency percentiles and the CPU time of every process; and in the same run, ONNX Runtime alone embedding photos
with the served EfficientNet (the model-only throughput the photo figures are compared with)."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from benchmarks.common import CACHE, MILVUS_SETTLE_S, console, finish, loadavg
from benchmarks.cpu import CpuMeter
from benchmarks.gateway_search.benchmark import SETTLE_QUICK_S, prepare_index
from benchmarks.gateway_search.load import TOP_K, query_images
from benchmarks.open_loop.arrivals import poisson_step
from benchmarks.open_loop.plot import plot_curves
from launchers.gateway import GatewayProcess
from launchers.ports import free_port
from launchers.stack import Stack
from server.settings import Settings
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

NAME = "open_loop"
OBJECTIVE_P99_MS = 50.0
TARGET_FMNIST_QPS = 800.0  # the target for Fashion-MNIST search by image on 2 cores
TARGET_FRACTION_OF_ORT = 0.85  # photo search and photo indexing against ONNX Runtime alone
CHANNELS = 8
DEADLINE_S = 1.0  # every call's deadline: past capacity the answer is a refusal or a timeout, not a growing queue
QUICK_DEADLINE_S = 5.0  # the smoke run checks what is recorded, on whatever else the machine is running
PHOTO_SIDE = 800  # photos are sent as JPEGs of this longest side, as a phone or a web page would
# The bundled photos are few (39 installed here): indexing sends each this many times under distinct ids, so the
# rate is measured over hundreds of images (39 x 16 = 624, the count); every copy is decoded and embedded.
PHOTO_COPIES = 16
FMNIST_RATES = (100, 200, 300, 400, 500, 600, 700, 800, 1000)
PHOTO_RATES = (5, 10, 15, 20, 30, 40, 60)
QUICK_FMNIST_RATES = (20, 60)
QUICK_PHOTO_RATES = (4,)
ORT_BATCH = 16
FULL_INDEX = 70000  # every Fashion-MNIST image
MILVUS_DATA = CACHE / "milvus-fmnist"  # shared with gateway_search: the 70k index is built once and kept
# Tuning candidates, each measured on the Fashion-MNIST curve in the same run as the defaults (a gateway restarted
# with these settings against the same Triton and Milvus), so before/after share the machine's conditions.
VARIANTS: dict[str, dict[str, str]] = {
    "coalescer: 2 batches in flight": {"VSEARCH_COALESCE_MAX_IN_FLIGHT": "2"},
    "coalescer: batches of at most 16": {"VSEARCH_COALESCE_MAX_BATCH": "16"},
    "decode: every image in the thread pool": {"VSEARCH_INLINE_DECODE_MAX_PIXELS": "0"},
    "shedding: queue a query at most 50 ms": {"VSEARCH_MAX_QUEUE_WAIT_MS": "50"},
}
QUICK_VARIANTS = dict(list(VARIANTS.items())[:1])


def photo_jpegs(n: int | None) -> tuple[list[str], list[bytes]]:
    """Ids and JPEG bytes (longest side PHOTO_SIDE) of the bundled photos."""
    from PIL import Image

    from extractors.datasets.photos import photo_paths

    ids, out = [], []
    for photo_id, path in photo_paths()[:n]:
        im = Image.open(path).convert("RGB")
        im.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        ids.append(photo_id)
        out.append(buf.getvalue())
    return ids, out


def index_photos(address: str, model: str, ids: list[str], jpegs: list[bytes], copies: int, batch: int = 16,
                 streams: int = 4) -> dict:
    """The photos upserted ``copies`` times (ids ``ID`` then ``ID#k``) as the SDK sends them (streams of ``batch``
    items, ``streams`` at a time): images per second end to end."""
    from concurrent.futures import ThreadPoolExecutor

    ids = [i if k == 0 else f"{i}#{k}" for k in range(copies) for i in ids]
    jpegs = jpegs * copies
    chunks = [list(range(i, min(i + batch, len(ids)))) for i in range(0, len(ids), batch)]
    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        def send(chunk: list[int]) -> pb.UpsertResponse:
            return stub.Upsert(iter([pb.UpsertRequest(model=model, id=ids[i], image=jpegs[i]) for i in chunk]),
                               timeout=300)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            replies = list(pool.map(send, chunks))
        seconds = time.perf_counter() - t0
    return {"images": len(ids), "upserted": sum(r.upserted for r in replies),
            "errors": sum(len(r.errors) for r in replies), "batch": batch, "streams": streams,
            "seconds": round(seconds, 2), "images_per_s": round(len(ids) / seconds, 1)}


def onnxruntime_alone(onnx: Path, jpegs: list[bytes], size: int, seconds: float) -> dict:
    """Images per second of ONNX Runtime embedding decoded photos in batches of ORT_BATCH, in this process, with the
    session Triton serves the model with (``export.onnx_cpu``: its graph, options and chunking) and one thread per
    core: the model's own throughput, without decoding, Triton or the gateway."""
    from PIL import Image

    from export.onnx_cpu import build_session, run_in_chunks
    from extractors.imaging import to_model_input
    from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME

    pixels = np.stack([to_model_input(Image.open(io.BytesIO(b)), size) for b in jpegs[:ORT_BATCH]])
    while len(pixels) < ORT_BATCH:
        pixels = np.concatenate([pixels, pixels])[:ORT_BATCH]
    threads = os.cpu_count() or 1
    session = build_session(str(onnx), threads=threads, outputs=[EMBEDDING_OUTPUT])
    run_in_chunks(session, [EMBEDDING_OUTPUT], INPUT_NAME, pixels)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_in_chunks(session, [EMBEDDING_OUTPUT], INPUT_NAME, pixels)
        n += ORT_BATCH
    elapsed = time.perf_counter() - t0
    return {"batch": ORT_BATCH, "threads": threads, "images": n, "seconds": round(elapsed, 2),
            "images_per_s": round(n / elapsed, 1)}


async def _curve(address: str, model: str, images: list[bytes], rates: Sequence[float], seconds: float,
                 pids: dict[str, int | None], deadline_s: float) -> list[dict]:
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    stubs = [search_pb2_grpc.SearchServiceStub(c) for c in channels]

    async def call(i: int, channel: int) -> None:
        await stubs[channel].Search(pb.SearchRequest(model=model, image=images[i % len(images)], top_k=TOP_K),
                                    timeout=deadline_s)

    rows = []
    try:
        await poisson_step(call, rates[0], min(seconds, 2.0), CHANNELS, seed=99)  # warm-up: channels, pools
        for step, rate in enumerate(rates):
            meter = CpuMeter(pids)
            meter.start()
            result = await poisson_step(call, rate, seconds, CHANNELS, seed=step)
            cpu = meter.stop()
            row = result.row()
            row["cpu_ms_per_query"] = {k: round(v * 1e3 / max(result.ok, 1), 3) for k, v in cpu.items()}
            row["cpu_ms_per_query_total"] = round(sum(row["cpu_ms_per_query"].values()), 3)
            row["loadavg_1m"] = loadavg()
            rows.append(row)
            console.print(f"{model} {rate}/s offered: {row['served_qps']}/s served, p50 {row['p50_ms']} ms, "
                          f"p99 {row['p99_ms']} ms, failed {row['failed']}, CPU ms/query {row['cpu_ms_per_query']}")
    finally:
        for c in channels:
            await c.close()
    return rows


def best_rate(rows: list[dict], objective_ms: float = OBJECTIVE_P99_MS) -> float | None:
    """The highest offered rate whose p99 (over all offered calls) met the objective."""
    ok = [r["offered_qps"] for r in rows if r["p99_ms"] is not None and r["p99_ms"] <= objective_ms]
    return max(ok) if ok else None


def run(quick: bool = False, seconds: float | None = None, n_index: int | None = None) -> dict:
    """``n_index``: a smaller Fashion-MNIST index than the full 70,000 (a trial of the full steps)."""
    n_index = n_index or (1000 if quick else FULL_INDEX)
    seconds = seconds or (1.5 if quick else 8.0)
    settings = Settings()
    vit, cnn = settings.models[0], settings.models[1]
    deadline_s = QUICK_DEADLINE_S if quick else DEADLINE_S
    results: dict = {"quick": quick, "seconds_per_step": seconds, "channels": CHANNELS, "deadline_s": deadline_s,
                     "objective_p99_ms": OBJECTIVE_P99_MS, "top_k": TOP_K, "indexed": n_index,
                     "settings": {"coalesce_max_batch": settings.coalesce_max_batch,
                                  "coalesce_max_in_flight": settings.coalesce_max_in_flight,
                                  "triton_instance_count": settings.triton_instance_count,
                                  "max_searches_in_flight": settings.max_searches_in_flight,
                                  "decode_workers": settings.decode_workers},
                     "loadavg_1m": {"start": loadavg()}}
    with tempfile.TemporaryDirectory() as tmp, Stack(settings.model_copy(update={
            "milvus_data_dir": MILVUS_DATA if n_index == FULL_INDEX else Path(tmp) / "milvus"}),
            gateway_port=free_port()) as stack:
        address = stack.gateway.address
        pids = {"client": os.getpid(), "gateway": stack.gateway.proc.pid, "triton": stack.triton.pid,
                "milvus": stack.milvus.pid if stack.milvus else None}
        results["index"] = prepare_index(address, stack.milvus.uri, vit, n_index,
                                         MILVUS_SETTLE_S if n_index == FULL_INDEX else SETTLE_QUICK_S)
        ids, jpegs = photo_jpegs(24 if quick else None)
        results["photo_indexing"] = index_photos(address, cnn, ids, jpegs, 1 if quick else PHOTO_COPIES)
        console.print(f"photo indexing: {results['photo_indexing']}")
        onnx = Path(stack.settings.model_repository) / cnn / "1" / "model.onnx"
        results["onnxruntime_alone"] = onnxruntime_alone(onnx, jpegs, 224, 2.0 if quick else 15.0)
        console.print(f"ONNX Runtime alone: {results['onnxruntime_alone']}")
        fmnist_queries = query_images(64 if quick else 256)  # one set for the default curve and every variant
        results["fmnist"] = {"model": vit, "rows": asyncio.run(_curve(
            address, vit, fmnist_queries, QUICK_FMNIST_RATES if quick else FMNIST_RATES,
            seconds, pids, deadline_s))}
        results["photos"] = {"model": cnn, "indexed": results["photo_indexing"]["upserted"], "rows": asyncio.run(_curve(
            address, cnn, jpegs, QUICK_PHOTO_RATES if quick else PHOTO_RATES, seconds, pids, deadline_s))}
        stack.gateway.stop()  # the variants each get a gateway of their own; the default one is done
        results["variants"] = {}
        for label, env in (QUICK_VARIANTS if quick else VARIANTS).items():
            with GatewayProcess([stack.triton.grpc_url], stack.milvus.uri, env=env) as gateway:
                console.print(f"variant {label}: {env}")
                rows = asyncio.run(_curve(gateway.address, vit, fmnist_queries,
                                          QUICK_FMNIST_RATES[-1:] if quick else FMNIST_RATES, seconds,
                                          {**pids, "gateway": gateway.proc.pid if gateway.proc else None},
                                          deadline_s))
            results["variants"][label] = {"env": env, "rows": rows, "best_rate": best_rate(rows)}
    for key in ("fmnist", "photos"):
        results[key]["best_rate"] = best_rate(results[key]["rows"])
    results["loadavg_1m"]["end"] = loadavg()
    results["plot"] = plot_curves(results)
    return finish(NAME, results)
