"""What is measured on an engine: insert rate, index build, recall@10 over every query, nq=1 and nq=64 latency
percentiles, RSS growth; and recall / latency per search ef (``ef_sweep``)."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import console, step
from benchmarks.vector_search.data import Dataset, recall_at_k
from benchmarks.vector_search.engines import Engine
from benchmarks.vector_search.plan import BATCH_NQ, MIN_SAMPLES, Plan


def latency(fn: Callable[[np.ndarray], object], batches: list[np.ndarray], max_n: int, max_s: float, label: str,
            min_n: int = MIN_SAMPLES) -> dict:
    """Per-call latency over ``batches`` (cycled, after 3 warm-up calls): ``max_n`` calls or ``max_s`` seconds,
    whichever comes first, but at least ``min_n`` calls."""
    for q in batches[:3]:
        fn(q)
    samples: list[float] = []
    stop = time.perf_counter() + max_s
    with step(label, max_n) as update:
        while len(samples) < max_n and (len(samples) < min_n or time.perf_counter() < stop):
            q = batches[len(samples) % len(batches)]
            t0 = time.perf_counter()
            fn(q)
            samples.append((time.perf_counter() - t0) * 1e3)
            update(advance=1)
    a = np.asarray(samples)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "mean_ms": round(float(a.mean()), 3)}


def singles(ds: Dataset) -> list[np.ndarray]:
    return [ds.queries[i:i + 1] for i in range(len(ds.queries))]


def batches_of(ds: Dataset) -> list[np.ndarray]:
    return [ds.queries[s:s + BATCH_NQ] for s in range(0, len(ds.queries) - BATCH_NQ + 1, BATCH_NQ)]


def search_all(engine: Engine) -> np.ndarray:
    """Every query, in batches of BATCH_NQ (how the gateway sends coalesced queries)."""
    q = engine.ds.queries
    return np.concatenate([engine.search(q[s:s + BATCH_NQ]) for s in range(0, len(q), BATCH_NQ)])


def ef_sweep(engine: Engine, plan: Plan) -> list[dict]:
    """Recall@10 (all queries) and nq=1 latency at each search ef of the plan, on an engine already built."""
    out = []
    with step(f"{engine.label}: ef sweep", len(plan.sweep_ef)) as update:
        for ef in plan.sweep_ef:
            engine.set_ef(ef)
            rec = recall_at_k(search_all(engine), engine.ds)
            lat = latency(engine.search, singles(engine.ds), plan.ef_lat_n, plan.lat_max_s,
                          f"{engine.label} ef={ef}: nq=1", min_n=plan.ef_lat_n)
            out.append({"ef": ef, "recall_at_10": round(rec, 4), "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})
            update(advance=1)
    return out


def measure(engine: Engine, plan: Plan, role: str | None = None,
            before: Callable[[Engine], None] | None = None) -> dict:
    """Insert (unless already loaded), wait for the index, then recall and latencies; ``before`` runs once the
    index is built (an ef sweep that sets the ef to measure at)."""
    ds = engine.ds
    if math.isnan(engine.insert_end):
        engine.load()
    if math.isnan(engine.build_s):
        engine.wait_built()
    if before is not None:
        before(engine)
    rec = recall_at_k(search_all(engine), ds)
    nq1 = latency(engine.search, singles(ds), plan.lat1_max, plan.lat_max_s, f"{engine.label}: nq=1")
    nq64 = latency(engine.search, batches_of(ds), plan.lat64_max, plan.lat_max_s, f"{engine.label}: nq={BATCH_NQ}")
    rss_after = engine.rss()
    row = {"dataset": ds.key, "engine": engine.kind, "label": engine.label, "role": role,
           "hnsw": engine.hnsw.as_dict() if engine.hnsw else None, "rows": ds.n, "dim": ds.dim,
           "create_s": round(engine.create_s, 2), "insert_s": round(engine.insert_s, 2),
           "insert_rows_per_s": round(ds.n / engine.insert_s, 1),
           "build_s": round(engine.build_s, 2), "build_in_insert": engine.builds_on_insert,
           "first_indexed_s": None if math.isnan(engine.first_served_s) else round(engine.first_served_s, 2),
           "segments": engine.segments,
           "searchable_s": round(engine.insert_s + engine.build_s, 2), "recall_at_10": round(rec, 4),
           "nq1": nq1, f"nq{BATCH_NQ}": nq64, "rss_growth_mb": round((rss_after - engine.rss_before) / 2**20, 1),
           "overlapped_build": plan.overlap_milvus and engine.kind == "milvus_server"}
    console.log(f"[bold]{ds.key}[/] {engine.label} ({engine.hnsw or 'exact'}): insert "
                  f"{row['insert_rows_per_s']:,.0f} rows/s, build {row['build_s']:.1f} s, recall@10 {rec:.4f}, "
                  f"nq=1 p50 {nq1['p50_ms']:.2f} ms, "
                  f"nq={BATCH_NQ} p50 {nq64['p50_ms']:.1f} ms, RSS +{row['rss_growth_mb']:.0f} MB")
    return row


def measure_and_close(engine: Engine, plan: Plan, role: str | None = None) -> dict:
    try:
        return measure(engine, plan, role=role)
    finally:
        engine.close()
        gc.collect()
