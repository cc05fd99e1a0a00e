"""The run: the stack up, the index ready and settled, closed-loop rows at each concurrency, a py-spy profile of the
gateway (collapsed stacks, which flamegraph.pl and speedscope read), the paced headline row, the direct-script rows."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from benchmarks import common, vsearch_index
from benchmarks.common import CACHE, MILVUS_SETTLE_S, console, finish
from benchmarks.cpu import CpuMeter
from benchmarks.gateway_search.load import TOP_K, direct_load, gateway_load, query_images
from benchmarks.milvus_settle import MIN_INDEXED_ROWS, Look, look_server, server_client, wait_settled
from benchmarks.triton_stats import diff, mean_batch, stats_at
from launchers.gateway import GatewayProcess
from launchers.ports import free_port
from launchers.stack import Stack
from server.settings import Settings

NAME = "gateway_search"
# The issue's headline: 500 QPS from 16 callers, p99 <= 20 ms.
HEADLINE_CONCURRENCY = 16
HEADLINE_QPS = 500.0
HEADLINE_P99_MS = 20.0
INDEX_BATCH_SIZE = 128  # `vsearch index --batch-size` when the index has to be built
SETTLE_QUICK_S = 1.0  # the quick run only needs the index built, not Milvus's compactions over
# The full 70k index is kept between runs (gitignored): indexing it is the ingest benchmark's job, not this one's.
MILVUS_DATA = CACHE / "milvus-fmnist"
PY_SPY_RATE_HZ = 200
# The gateway's per-search work switched off one at a time (a fresh gateway each, the same Triton and Milvus), at
# the headline concurrency, interleaved with the default over ``VARIANT_ROUNDS`` rounds: what each feature costs.
VARIANTS: dict[str, dict[str, str]] = {
    "live recall off": {"VSEARCH_LIVE_RECALL_SAMPLE_RATE": "0"},
    "decode in the thread pool": {"VSEARCH_INLINE_DECODE_MAX_PIXELS": "0"},
    "2 batches in flight": {"VSEARCH_COALESCE_MAX_IN_FLIGHT": "2"},
}
VARIANT_ROUNDS = 2
# Frames every py-spy sample has (the interpreter's and the server's entry points): not where the time goes.
PY_SPY_SKIP = ("runpy", "asyncio/runners.py", "base_events.py", "threading.py", "server/__main__.py", "server/app.py")


def wait_indexed(milvus_uri: str, model: str, quiet_s: float, timeout_s: float = 900) -> float:
    """Seconds until Milvus serves the model's collection settled (``benchmarks.milvus_settle``)."""
    from server.vector_store.milvus import collection_name

    name = collection_name(model)
    with server_client(milvus_uri) as client, \
            console.status("waiting for Milvus to seal and index the collection") as status:
        t0 = time.perf_counter()

        def show(seen: Look, quiet: float) -> None:
            status.update(f"waiting for Milvus: {len(seen.loaded)} segments served, {len(seen.stored)} stored, "
                          + (f"unchanged for {quiet:.0f} of {quiet_s:.0f} s" if seen.ok else "not all indexed"))

        settled = wait_settled(lambda: look_server(client, name, small_rows=MIN_INDEXED_ROWS), quiet_s, timeout_s,
                               f"the collection of {model}", show)
    return settled.began - t0


def prepare_index(address: str, milvus_uri: str, model: str, n_index: int, quiet_s: float) -> dict:
    """``n_index`` items of Fashion-MNIST in the model's collection (reused when the gateway holds enough, else
    built with ``vsearch index`` as a user would), settled; what was done and how long it took."""
    have = vsearch_index.stored_items(address, model)
    if have >= n_index:
        out = {"indexed": have, "reused": True}
    else:
        out = {**vsearch_index.index(address, model, n_index, batch_size=INDEX_BATCH_SIZE)[0], "reused": False}
    out["seconds_until_indexed"] = round(wait_indexed(milvus_uri, model, quiet_s), 1)
    return {**out, "settled_for_s": quiet_s}


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy recording ``pid`` for ``seconds`` into ``out``, started (None when py-spy is not installed)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        console.print("[yellow]py-spy not found: no profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
                             str(PY_SPY_RATE_HZ), "--nonblocking", "--format", "raw", "--output", str(out)],
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
    rows = [(f, n / total) for f, n in inclusive.most_common() if not any(k in f for k in PY_SPY_SKIP)]
    return [(f, round(share, 3)) for f, share in rows[:top]] if total else []


def measure_variants(stack: Stack, images: list[bytes], model: str, seconds: float, quick: bool) -> dict:
    """{variant: [row per round]} at the headline concurrency: the default gateway and each of ``VARIANTS``, each
    in a gateway process of its own (so nothing a variant cached or warmed carries over), interleaved."""
    env = {"VSEARCH_MODEL_REPOSITORY": str(Path(stack.settings.model_repository).resolve())}
    variants = {"default": {}, **({} if quick else VARIANTS)}
    out: dict[str, list[dict]] = {}
    for _ in range(1 if quick else VARIANT_ROUNDS):
        for name, extra in variants.items():
            with GatewayProcess([stack.triton.grpc_url], stack.milvus.uri, env={**env, **extra}) as gateway:
                pids = {"gateway": gateway.proc.pid, "triton": stack.triton.pid, "milvus": stack.milvus.pid,
                        "client": os.getpid()}
                asyncio.run(gateway_load(gateway.address, model, images, HEADLINE_CONCURRENCY, 2.0, CpuMeter(pids)))
                row = asyncio.run(gateway_load(gateway.address, model, images, HEADLINE_CONCURRENCY, seconds,
                                               CpuMeter(pids)))
            out.setdefault(name, []).append(row)
            _log(f"variant {name}", row | {"triton_mean_batch": "-"})
    return out


def _with_batches(url: str, model: str, measure: Callable[[], dict]) -> dict:
    """``measure()``'s row with what Triton ran meanwhile: inferences, executions and their ratio."""
    before = stats_at(url, model)
    row = measure()
    d = diff(stats_at(url, model), before)
    row["triton_inferences"], row["triton_executions"] = d["inferences"], d["executions"]
    row["triton_mean_batch"] = mean_batch(d)
    return row


def _log(label: str, row: dict) -> None:
    console.print(f"{label}: {row['qps']} QPS, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                  f"CPU ms/query {row['cpu_ms_per_query']}, Triton batch {row['triton_mean_batch']}")


def run(quick: bool = False, seconds: float | None = None) -> dict:
    """Search by image through a stack started with ``Settings()``, ``seconds`` per row."""
    n_index = 2000 if quick else 70000
    seconds = seconds or (3.0 if quick else 10.0)
    concurrencies = (1, HEADLINE_CONCURRENCY) if quick else (1, 8, HEADLINE_CONCURRENCY, 32)
    settings = Settings()
    model = settings.models[0]
    results: dict = {"model": model, "indexed": n_index, "seconds_per_run": seconds, "quick": quick,
                     "top_k": TOP_K, "hnsw": {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction,
                                              "ef": settings.hnsw_ef},
                     "gateway": [], "direct": []}
    with tempfile.TemporaryDirectory() as tmp, Stack(settings.model_copy(update={
            "milvus_data_dir": Path(tmp) / "milvus" if quick else MILVUS_DATA}), gateway_port=free_port()) as stack:
        address, triton_url = stack.gateway.address, stack.triton.grpc_url
        results["index"] = prepare_index(address, stack.milvus.uri, model, n_index,
                                         SETTLE_QUICK_S if quick else MILVUS_SETTLE_S)
        images = query_images(64 if quick else 256)
        pids = {"gateway": stack.gateway.proc.pid, "triton": stack.triton.pid, "milvus": stack.milvus.pid,
                "client": os.getpid()}

        def gateway_row(c: int, rate: float | None = None) -> dict:
            return _with_batches(triton_url, model, lambda: asyncio.run(
                gateway_load(address, model, images, c, seconds, CpuMeter(pids), rate=rate)))

        for c in concurrencies:
            results["gateway"].append(row := gateway_row(c))
            _log(f"gateway c{c}", row)
        if not quick:  # a separate run: sampling costs the gateway CPU, so no measured row is profiled
            stacks = common.RESULTS / "profiles" / f"gateway_c{HEADLINE_CONCURRENCY}.txt"
            spy = start_py_spy(pids["gateway"], seconds, stacks)
            asyncio.run(gateway_load(address, model, images, HEADLINE_CONCURRENCY, seconds, CpuMeter(pids)))
            if spy is not None and spy.wait(60) == 0 and stacks.exists():
                results["profile"] = {"stacks": str(stacks.relative_to(common.RESULTS.parent)),
                                      "top": profile_summary(stacks)}
        results["variants"] = measure_variants(stack, images, model, seconds, quick)
        # The headline as a service sees it: 500 queries/s offered by 16 callers, latency from the send schedule.
        results["paced"] = row = gateway_row(HEADLINE_CONCURRENCY, rate=HEADLINE_QPS)
        _log(f"paced {HEADLINE_QPS:.0f} QPS offered by {HEADLINE_CONCURRENCY}", row)
        direct_pids = {k: v for k, v in pids.items() if k != "gateway"}
        for c in concurrencies:
            row = _with_batches(triton_url, model, lambda c=c: asyncio.run(direct_load(
                triton_url, stack.milvus.uri, model, images, c, seconds, CpuMeter(direct_pids), stack.settings)))
            results["direct"].append(row)
            _log(f"direct c{c}", row)
    return finish(NAME, results)
