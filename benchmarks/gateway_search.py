"""Search by image through the gateway (Triton + Milvus behind it) over the Fashion-MNIST index.

For each concurrency: QPS, client-side p50/p99, the gateway's own stage timings (decode, embed, vector search,
gateway overhead = total minus the stages) and the CPU time every process spent per query (client, gateway,
Triton with its python-backend stub, Milvus), which is what shows where the 2 cores go. The same queries are
then sent by a script that calls Triton and Milvus directly (decode, ``tritonclient`` infer, ``pymilvus`` search,
one query at a time like the gateway's callers): the gateway's cost is the difference.

The load generator is one asyncio process (``grpc.aio``), so the client's own cost per query is small and
measured. ``--profile`` samples the gateway with py-spy during the headline row (stacks + top functions)."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks import common
from benchmarks.common import MILVUS_SETTLE_S, CpuMeter, Target, write_result
from clients.indexing import index_images
from clients.sdk import SearchClient
from extractors.datasets import load_fashion_mnist
from launchers.ports import free_port
from launchers.stack import Stack
from server.settings import Settings
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

console = Console()
NAME = "gateway_search"
HEADLINE_CONCURRENCY = 16
HEADLINE_QPS = 500.0
HEADLINE_P99_MS = 20.0
CACHE = Path(__file__).parent / "cache"


SETTLE_QUICK_S = 1.0  # the quick run only needs the index built, not Milvus's compactions over


def query_images(n: int = 256) -> list[bytes]:
    """PNG bytes of Fashion-MNIST test images: what a client would send."""
    ds = load_fashion_mnist("test")
    out = []
    for i in range(n):
        buf = io.BytesIO()
        ds.pil(i).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


async def _drive(call, n_images: int, concurrency: int, seconds: float,
                 rate: float | None = None) -> tuple[list[tuple], int, float]:
    """``concurrency`` tasks calling ``call(i)`` for ``seconds``; rows of (client_ms, *timings).

    Closed loop (``rate`` None): each task sends its next query as soon as the last one is answered, so this
    finds the highest throughput, and by Little's law its mean latency is concurrency / throughput. Paced
    (``rate`` queries/s in all): each task has a schedule of send times; latency is measured from the scheduled
    time, not from when a late task got round to sending, so a stall is not hidden (no coordinated omission)."""
    rows: list[tuple] = []
    errors = [0]
    start = time.perf_counter()
    stop = start + seconds

    async def worker(w: int) -> None:
        i = w
        interval = concurrency / rate if rate else 0.0
        due = start + (w / concurrency) * interval  # workers evenly staggered
        while time.perf_counter() < stop:
            if rate:
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                t0, due = due, due + interval
            else:
                t0 = time.perf_counter()
            try:
                timings = await call(i % n_images)
                rows.append(((time.perf_counter() - t0) * 1e3, *timings))
            except Exception:  # noqa: BLE001 - counted and reported; a benchmark run must finish
                errors[0] += 1
            i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return rows, errors[0], time.perf_counter() - t0


def _summary(rows: list[tuple], errors: int, elapsed: float, concurrency: int, cpu: dict[str, float]) -> dict:
    a = np.asarray(rows, dtype=np.float64)
    n = max(len(rows), 1)
    out = {"concurrency": concurrency, "requests": len(rows), "errors": errors, "seconds": round(elapsed, 2),
           "qps": round(len(rows) / elapsed, 1),
           "p50_ms": round(float(np.percentile(a[:, 0], 50)), 2) if len(rows) else None,
           "p99_ms": round(float(np.percentile(a[:, 0], 99)), 2) if len(rows) else None,
           "cpu_ms_per_query": {k: round(v * 1e3 / n, 3) for k, v in cpu.items()}}
    out["cpu_ms_per_query_total"] = round(sum(out["cpu_ms_per_query"].values()), 3)
    return out


async def gateway_load(address: str, model: str, images: list[bytes], concurrency: int, seconds: float,
                       meter: CpuMeter, rate: float | None = None) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)

        async def call(i: int):
            r = await stub.Search(pb.SearchRequest(model=model, image=images[i], top_k=10), timeout=30)
            t = r.timings
            return t.decode_ms, t.embed_ms, t.search_ms, t.total_ms

        await _drive(call, len(images), concurrency, 1.0)  # warm-up: channels, thread pools, caches
        meter.start()
        rows, errors, elapsed = await _drive(call, len(images), concurrency, seconds, rate)
        out = _summary(rows, errors, elapsed, concurrency, meter.stop())
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
                      seconds: float, meter: CpuMeter) -> dict:
    """The baseline: this script decodes, calls Triton and Milvus itself, one query per call, no gateway."""
    import tritonclient.grpc.aio as tclient
    from PIL import Image
    from pymilvus import MilvusClient

    from server.vector_store.milvus import collection_name

    settings = Settings()
    triton = tclient.InferenceServerClient(triton_url)
    milvus = MilvusClient(uri=milvus_uri, dedicated=True)
    collection = collection_name(model)
    params = {"metric_type": "COSINE", "params": {"ef": max(settings.hnsw_ef, 10)}}

    def decode(data: bytes) -> np.ndarray:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)[None].copy()

    async def call(i: int):
        pixels = decode(images[i])
        inp = tclient.InferInput("pixels", list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels)
        res = await triton.infer(model, [inp], outputs=[tclient.InferRequestedOutput("embedding")])
        vec = res.as_numpy("embedding")
        await asyncio.to_thread(milvus.search, collection, data=vec.tolist(), limit=10, output_fields=["metadata"],
                                search_params=params, consistency_level="Bounded")
        return ()

    try:
        await _drive(call, len(images), concurrency, 1.0)
        meter.start()
        rows, errors, elapsed = await _drive(call, len(images), concurrency, seconds)
        return _summary(rows, errors, elapsed, concurrency, meter.stop())
    finally:
        await triton.close()
        milvus.close()


def _profile_gateway(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy samples the gateway's Python stacks during a row; collapsed-stack text (flamegraph.pl and
    speedscope read it), summarised by ``profile_summary``."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        console.print("[yellow]py-spy not found: no profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                             "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def profile_summary(path: Path, top: int = 15) -> list[tuple[str, float]]:
    """The functions with the largest share of samples (inclusive: a function and what it calls)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            inclusive[frame] += int(n)
    skip = ("runpy", "asyncio/runners.py", "base_events.py", "threading.py", "server/__main__.py", "server/app.py")
    rows = [(f, n / total) for f, n in inclusive.most_common() if not any(k in f for k in skip)]
    return [(f, round(share, 3)) for f, share in rows[:top]] if total else []


def triton_counts(url: str, model: str) -> tuple[int, int]:
    """Triton's own (inference_count, execution_count) for the model: their ratio is the mean batch size."""
    import tritonclient.grpc as tclient

    with tclient.InferenceServerClient(url) as c:
        stats = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _with_batches(row: dict, before: tuple[int, int], after: tuple[int, int]) -> dict:
    inferences, executions = after[0] - before[0], after[1] - before[1]
    row["triton_inferences"], row["triton_executions"] = inferences, executions
    row["triton_mean_batch"] = round(inferences / executions, 2) if executions else None
    return row


def wait_indexed(milvus_uri: str, model: str, quiet_s: float, timeout_s: float = 900) -> float:
    """Seconds until every segment of the model's collection is sealed and HNSW-indexed (the gateway flushes
    after a bulk write; Milvus then builds the index in the background) and the set of segments Milvus serves
    is the set it stores and has not changed for ``quiet_s``. Searching growing segments is brute force, and
    after a fresh ingest Milvus keeps compacting and re-indexing on its own for a minute or two (every upsert
    also writes a delete; its compaction runs every 60 s): measuring before that measures the wrong thing and
    shares the cores with the compaction."""
    from pymilvus import MilvusClient

    from server.vector_store.milvus import collection_name

    name = collection_name(model)
    client = MilvusClient(uri=milvus_uri, timeout=60, dedicated=True)
    t0 = since = time.perf_counter()
    state = None
    try:
        with console.status("waiting for Milvus to seal and index the collection") as status:
            while (now := time.perf_counter()) - t0 < timeout_s:
                loaded = client.list_loaded_segments(name)
                stored = {s.segment_id for s in client.list_persistent_segments(name) if s.num_rows > 0}
                # 3 = Sealed; Milvus indexes sealed segments of >= 1,024 rows (smaller ones are brute-forced)
                ok = bool(loaded) and all(s.state == 3 and (s.index_id or s.num_rows < 1024) for s in loaded) \
                    and {s.segment_id for s in loaded} == stored
                new_state = frozenset(stored) if ok else None
                if new_state != state:
                    state, since = new_state, now
                if ok and now - since >= quiet_s:
                    return since - t0
                status.update(f"waiting for Milvus: {len(loaded)} segments served, {len(stored)} stored, "
                              + (f"unchanged for {now - since:.0f} of {quiet_s:.0f} s" if ok else "not all indexed"))
                time.sleep(1.0)
    finally:
        client.close()
    raise TimeoutError(f"the collection of {model} was not sealed, indexed and settled within {timeout_s} s")


def _prepare_index(client: SearchClient, milvus_uri: str, model: str, n_index: int, quiet_s: float) -> dict:
    have = next((m.count for m in client.list_models() if m.name == model), 0)
    out = {"indexed": have, "reused": True} if have >= n_index else \
        {**index_images(client, None, "fashion-mnist", model, n_index, batch_size=128), "reused": False}
    out["seconds_until_indexed"] = round(wait_indexed(milvus_uri, model, quiet_s), 1)
    out["settled_for_s"] = quiet_s
    return out


def run(quick: bool = False, n_index: int | None = None, seconds: float | None = None,
        concurrencies: tuple[int, ...] | None = None, profile: bool | None = None, data_dir: Path | None = None,
        gateway_env: dict[str, str] | None = None) -> dict:
    n_index = n_index or (2000 if quick else 70000)
    profile = (not quick) if profile is None else profile  # the full run profiles the gateway (py-spy)
    seconds = seconds or (3.0 if quick else 10.0)
    concurrencies = concurrencies or ((1, HEADLINE_CONCURRENCY) if quick else (1, 8, HEADLINE_CONCURRENCY, 32))
    settings = Settings()
    model = settings.models[0]
    results: dict = {"model": model, "indexed": n_index, "seconds_per_run": seconds, "quick": quick,
                     "hnsw": {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction,
                              "ef": settings.hnsw_ef},
                     "gateway": [], "direct": []}
    tmp = tempfile.TemporaryDirectory()
    # The full 70k index is kept between runs (benchmarks/cache/, gitignored): indexing it is the ingest
    # benchmark's job, not this one's.
    milvus_dir = Path(data_dir) if data_dir else (Path(tmp.name) / "milvus" if quick else CACHE / "milvus-fmnist")
    try:
        settings = Settings(milvus_data_dir=milvus_dir)
        with Stack(settings, gateway_port=free_port(), gateway_env=gateway_env) as stack:
            with SearchClient(stack.gateway.address) as client:
                results["index"] = _prepare_index(client, stack.milvus.uri, model, n_index,
                                                  SETTLE_QUICK_S if quick else MILVUS_SETTLE_S)
            images = query_images(64 if quick else 256)
            pids = {"gateway": stack.gateway.proc.pid, "triton": stack.triton.pid, "milvus": stack.milvus.pid,
                    "client": os.getpid()}
            for c in concurrencies:
                before = triton_counts(stack.triton.grpc_url, model)
                row = asyncio.run(gateway_load(stack.gateway.address, model, images, c, seconds, CpuMeter(pids)))
                _with_batches(row, before, triton_counts(stack.triton.grpc_url, model))
                results["gateway"].append(row)
                console.print(f"gateway c{c}: {row['qps']} QPS, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                              f"CPU ms/query {row['cpu_ms_per_query']}, Triton batch {row['triton_mean_batch']}")
            if profile:  # a separate run: sampling costs the gateway CPU, so no measured row is profiled
                stacks = common.RESULTS / "profiles" / f"gateway_c{HEADLINE_CONCURRENCY}.txt"
                spy = _profile_gateway(pids["gateway"], seconds, stacks)
                asyncio.run(gateway_load(stack.gateway.address, model, images, HEADLINE_CONCURRENCY, seconds,
                                         CpuMeter(pids)))
                if spy is not None and spy.wait(60) == 0 and stacks.exists():
                    results["profile"] = {"stacks": str(stacks.relative_to(common.RESULTS.parent)),
                                          "top": profile_summary(stacks)}
            # The headline as a service sees it: 500 queries/s offered by 16 callers, latency from the send schedule.
            before = triton_counts(stack.triton.grpc_url, model)
            row = asyncio.run(gateway_load(stack.gateway.address, model, images, HEADLINE_CONCURRENCY, seconds,
                                           CpuMeter(pids), rate=HEADLINE_QPS))
            results["paced"] = _with_batches(row, before, triton_counts(stack.triton.grpc_url, model))
            console.print(f"paced {HEADLINE_QPS:.0f} QPS offered by {HEADLINE_CONCURRENCY}: {row['qps']} QPS, "
                          f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, Triton batch {row['triton_mean_batch']}")
            direct_pids = {k: v for k, v in pids.items() if k != "gateway"}
            for c in concurrencies:
                before = triton_counts(stack.triton.grpc_url, model)
                row = asyncio.run(direct_load(stack.triton.grpc_url, stack.milvus.uri, model, images, c, seconds,
                                              CpuMeter(direct_pids)))
                _with_batches(row, before, triton_counts(stack.triton.grpc_url, model))
                results["direct"].append(row)
                console.print(f"direct c{c}: {row['qps']} QPS, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                              f"CPU ms/query {row['cpu_ms_per_query']}, Triton batch {row['triton_mean_batch']}")
    finally:
        tmp.cleanup()
    _print(results)
    console.print(f"written to {write_result(NAME, results)}")
    return results


def _print(results: dict) -> None:
    table = Table(title=f"search by image ({results['model']}, {results['indexed']} items)")
    for col in ("path", "conc.", "QPS", "p50 ms", "p99 ms", "decode", "embed", "search", "overhead", "CPU ms/query"):
        table.add_column(col)
    for path in ("gateway", "direct"):
        for r in results[path]:
            table.add_row(path, str(r["concurrency"]), str(r["qps"]), str(r["p50_ms"]), str(r["p99_ms"]),
                          *[str(r.get(f"{k}_p50_ms", "")) for k in ("decode", "embed", "search", "gateway_overhead")],
                          str(r["cpu_ms_per_query_total"]))
    console.print(table)


def _headline(result: dict) -> dict | None:
    return next((r for r in result["gateway"] if r["concurrency"] == HEADLINE_CONCURRENCY), None)


def targets(result: dict) -> list[Target]:
    out = []
    c1 = next((r for r in result["gateway"] if r["concurrency"] == 1), None)
    if c1 and c1.get("gateway_overhead_p50_ms") is not None:
        out.append(Target("gateway overhead at p50 (concurrency 1)", "<= 1 ms",
                          f"{c1['gateway_overhead_p50_ms']:.3f} ms", c1["gateway_overhead_p50_ms"] <= 1.0))
    h = _headline(result)
    items = f"{result['indexed']:,} items"
    if h:
        out.append(Target(f"search by image, {items}, {HEADLINE_CONCURRENCY} callers back to back (throughput)",
                          f">= {HEADLINE_QPS:.0f} QPS", f"{h['qps']:.0f} QPS (p99 {h['p99_ms']:.1f} ms)",
                          h["qps"] >= HEADLINE_QPS))
    if paced := result.get("paced"):
        kept_up = paced["qps"] >= 0.98 * HEADLINE_QPS
        out.append(Target(f"search by image, {items}, {HEADLINE_QPS:.0f} QPS offered by {HEADLINE_CONCURRENCY} callers",
                          f"served, p99 <= {HEADLINE_P99_MS:.0f} ms",
                          f"{paced['qps']:.0f} QPS served, p99 {paced['p99_ms']:.1f} ms",
                          kept_up and paced["p99_ms"] <= HEADLINE_P99_MS))
    return out


def _hnsw(result: dict) -> str:
    h = result.get("hnsw")
    return f": M {h['m']}, efConstruction {h['ef_construction']}, ef {h['ef']}" if h else ""


def _settled(result: dict) -> str:
    quiet = result.get("index", {}).get("settled_for_s")
    return f"; its segment set unchanged for {quiet:.0f} s, so Milvus's own compactions were over" if quiet else ""


def _row(label: str, r: dict) -> str:
    cpu = r["cpu_ms_per_query"]
    split = " / ".join(f"{cpu[k]:.2f}" if k in cpu else "-" for k in ("client", "gateway", "triton", "milvus"))
    stages = [f"{r[f'{k}_p50_ms']:.2f} ms" if f"{k}_p50_ms" in r else "-"
              for k in ("decode", "embed", "search", "gateway_overhead")]
    batch = r.get("triton_mean_batch")
    return (f"| {label} | {r['concurrency']} | {r['qps']:.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms"
            f" | {' | '.join(stages)} | {batch if batch is not None else '-'} | {r['cpu_ms_per_query_total']:.2f} "
            f"({split}) |")


def markdown(result: dict) -> str:
    lines = [
        "## Search by image through the gateway (`benchmarks/gateway_search.py`)",
        "",
        f"{result['model']} over {result['indexed']:,} indexed Fashion-MNIST images in the Milvus server (sealed and "
        f"HNSW-indexed before measuring{_hnsw(result)}{_settled(result)}), PNG queries (28x28), top_k 10 with "
        "metadata, "
        f"{result['seconds_per_run']:.0f} s per row. The load generator is one asyncio process on the same machine. "
        "*closed* rows: each caller sends its next query when the last is answered (highest throughput; by Little's "
        "law mean latency = callers / QPS). *paced* row: the callers send on a fixed schedule and latency counts "
        "from the scheduled time. Stages are the gateway's own timings (medians; waiting for a batch counts as "
        "embed); overhead = gateway total minus the stages. Triton batch = Triton's inferences / executions. "
        "CPU ms/query = CPU time of each process during the row / queries served (client, gateway, Triton incl. "
        "its python-backend stub, Milvus): it shows where the 2 cores go.",
        "",
        "| path | callers | QPS | p50 | p99 | decode | embed | search | overhead | Triton batch | CPU ms/query "
        "(client / gateway / Triton / Milvus) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row("gateway, closed", r) for r in result["gateway"]]
    if paced := result.get("paced"):
        lines.append(_row(f"gateway, paced {paced['offered_qps']:.0f} QPS", paced))
    lines += [_row("direct script, closed", r) for r in result["direct"]]
    pairs = [(g, d) for g in result["gateway"] for d in result["direct"] if g["concurrency"] == d["concurrency"]]
    if pairs:
        lines += ["", "Gateway vs the direct script (same queries, same callers): "
                  + "; ".join(f"{g['concurrency']} callers: {g['qps'] / max(d['qps'], 1e-9):.2f}x the QPS"
                              for g, d in pairs) + "."]
    h = _headline(result)
    if h:
        lines += ["", f"Little's law: {HEADLINE_CONCURRENCY} callers back to back at {HEADLINE_QPS:.0f} QPS would "
                  f"wait {HEADLINE_CONCURRENCY / HEADLINE_QPS * 1e3:.0f} ms on average, so p99 <= "
                  f"{HEADLINE_P99_MS:.0f} ms at that concurrency needs >= "
                  f"{HEADLINE_CONCURRENCY / HEADLINE_P99_MS * 1e3:.0f} QPS; the latency "
                  "target is therefore measured on the paced row (500 QPS offered by 16 callers)."]
    if prof := result.get("profile"):
        lines += ["", f"Where the gateway's time goes at {HEADLINE_CONCURRENCY} callers (py-spy in a separate run, "
                  f"share of samples in a function and what it calls; stacks in `benchmarks/{prof['stacks']}`):", ""]
        lines += [f"- {share:.0%} `{frame}`" for frame, share in prof["top"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n-index", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--concurrency", type=int, nargs="+")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="py-spy profile of the gateway at the headline row (default: on in full runs)")
    p.add_argument("--data-dir", type=Path, help="Milvus data dir to reuse (default benchmarks/cache/milvus-fmnist)")
    a = p.parse_args()
    run(a.quick, a.n_index, a.seconds, tuple(a.concurrency) if a.concurrency else None, a.profile, a.data_dir)
