"""The run: the stack up (Triton, Milvus, the gateway), the index ready, then closed-loop rows at each concurrency,
an optional py-spy profile, the paced headline row, and the direct-script rows."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import common
from benchmarks.common import MILVUS_SETTLE_S, console, write_result
from benchmarks.cpu import CpuMeter
from benchmarks.gateway_search.index import prepare_index
from benchmarks.gateway_search.load import direct_load, gateway_load, query_images
from benchmarks.gateway_search.plan import (
    HEADLINE_CONCURRENCY,
    HEADLINE_QPS,
    MILVUS_DATA,
    NAME,
    SETTLE_QUICK_S,
    TOP_K,
)
from benchmarks.gateway_search.profile import profile_summary, start_py_spy
from benchmarks.gateway_search.section import print_result
from benchmarks.triton_stats import diff, mean_batch, stats_at
from launchers.ports import free_port
from launchers.stack import Stack
from server.settings import Settings


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


def run(quick: bool = False, n_index: int | None = None, seconds: float | None = None,
        concurrencies: tuple[int, ...] | None = None, profile: bool | None = None, data_dir: Path | None = None,
        gateway_env: dict[str, str] | None = None, settings: Settings | None = None) -> dict:
    """Measures search by image through the stack started with ``settings`` (default ``Settings()``; its Milvus
    data in ``data_dir``: default a temp folder for quick runs, else ``plan.MILVUS_DATA``, kept between runs)."""
    n_index = n_index or (2000 if quick else 70000)
    profile = (not quick) if profile is None else profile  # the full run profiles the gateway (py-spy)
    seconds = seconds or (3.0 if quick else 10.0)
    concurrencies = concurrencies or ((1, HEADLINE_CONCURRENCY) if quick else (1, 8, HEADLINE_CONCURRENCY, 32))
    settings = settings or Settings()
    model = settings.models[0]
    results: dict = {"model": model, "indexed": n_index, "seconds_per_run": seconds, "quick": quick, "top_k": TOP_K,
                     "hnsw": {"m": settings.hnsw_m, "ef_construction": settings.hnsw_ef_construction,
                              "ef": settings.hnsw_ef},
                     "gateway": [], "direct": []}
    tmp = tempfile.TemporaryDirectory()
    milvus_dir = Path(data_dir) if data_dir else (Path(tmp.name) / "milvus" if quick else MILVUS_DATA)
    try:
        with Stack(settings.model_copy(update={"milvus_data_dir": milvus_dir}), gateway_port=free_port(),
                   gateway_env=gateway_env) as stack:
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
            if profile:  # a separate run: sampling costs the gateway CPU, so no measured row is profiled
                stacks = common.RESULTS / "profiles" / f"gateway_c{HEADLINE_CONCURRENCY}.txt"
                spy = start_py_spy(pids["gateway"], seconds, stacks)
                asyncio.run(gateway_load(address, model, images, HEADLINE_CONCURRENCY, seconds, CpuMeter(pids)))
                if spy is not None and spy.wait(60) == 0 and stacks.exists():
                    results["profile"] = {"stacks": str(stacks.relative_to(common.RESULTS.parent)),
                                          "top": profile_summary(stacks)}
            # The headline as a service sees it: 500 queries/s offered by 16 callers, latency from the send schedule.
            results["paced"] = row = gateway_row(HEADLINE_CONCURRENCY, rate=HEADLINE_QPS)
            _log(f"paced {HEADLINE_QPS:.0f} QPS offered by {HEADLINE_CONCURRENCY}", row)
            direct_pids = {k: v for k, v in pids.items() if k != "gateway"}
            for c in concurrencies:
                row = _with_batches(triton_url, model, lambda c=c: asyncio.run(direct_load(
                    triton_url, stack.milvus.uri, model, images, c, seconds, CpuMeter(direct_pids), stack.settings)))
                results["direct"].append(row)
                _log(f"direct c{c}", row)
    finally:
        tmp.cleanup()
    print_result(results)
    console.print(f"written to {write_result(NAME, results)}")
    return results
