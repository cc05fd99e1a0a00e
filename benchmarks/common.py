"""Shared benchmark plumbing: timing loops, percentiles, results files, machine description.

Every benchmark module ``benchmarks/<name>.py`` has the same shape, so ``make bench`` can run them all and build
BENCHMARKS.md from their results:

- ``run(quick: bool = False) -> dict``: measures, prints a rich table, writes ``results/<name>.json`` with
  ``write_result`` and returns the payload. ``quick`` is a bounded smoke run (well under a minute) for the tests.
- ``markdown(result: dict) -> str``: the module's BENCHMARKS.md section (``## ...`` heading, how it was measured,
  tables), every sentence derived from ``result``.
- ``targets(result: dict) -> list[Target]``: the issue's targets this module measures, with the measured value.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

# Tests point this at a temporary folder so quick runs never overwrite the committed figures.
RESULTS = Path(os.environ.get("VSEARCH_BENCH_RESULTS", Path(__file__).parent / "results"))


@dataclass(frozen=True)
class Target:
    """One target of the performance issue: ``met`` is computed from ``measured``, never typed in."""
    name: str
    target: str
    measured: str
    met: bool


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1m_at_end": round(load[0], 2)}  # written with the results, so: when the run ended


def latency_ms(fn: Callable[[], object], n: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    a = np.asarray(samples)
    return {"n": n, "p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def throughput(fn: Callable[[], object], concurrency: int, seconds: float, items_per_call: int = 1) -> dict:
    """Calls/s and items/s with ``concurrency`` threads calling ``fn`` back to back for ``seconds``."""
    stop = time.perf_counter() + seconds
    lat: list[float] = []

    def worker(_):
        n = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            fn()
            lat.append((time.perf_counter() - t0) * 1e3)
            n += 1
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        calls = sum(pool.map(worker, range(concurrency)))
    elapsed = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"concurrency": concurrency, "calls": calls, "calls_per_s": round(calls / elapsed, 1),
            "items_per_s": round(calls * items_per_call / elapsed, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def read_result(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# Milvus compacts every 60 s (and re-indexes what it compacted): a segment set unchanged this long is final.
MILVUS_SETTLE_S = 75.0


class CpuMeter:
    """CPU seconds (user + system) of named process trees between ``start()`` and ``stop()``. The process running the
    benchmark is counted alone: the servers it launched are its children but are counted apart."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}

    def _sample(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            total = 0.0
            for q in [p] if p.pid == os.getpid() else [p, *p.children(recursive=True)]:
                try:
                    t = q.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = total
        return out

    def start(self) -> None:
        self.t0 = self._sample()

    def stop(self) -> dict[str, float]:
        t1 = self._sample()
        return {k: round(t1[k] - self.t0[k], 6) for k in t1}
