"""The open-loop load generator: requests arrive at a fixed offered rate as a Poisson process, whatever the server
does (MLPerf's server scenario, ghz/locust constant-rate modes), spread over several channels.

A closed loop (each caller waits for its answer) slows down with the server and hides its queues: its latency
curve says what concurrency does, not what an arrival rate does. Here each arrival's latency is counted from its
scheduled time, so a client that falls behind its own schedule shows as latency, never as a lower rate. Every call
carries a deadline; a call not answered OK (refused, past its deadline) counts as an infinitely late answer in the
percentiles, so p99 <= objective means at least 99% of the offered requests were served within it."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import numpy as np

MAX_OUTSTANDING = 4096  # more unanswered calls than this and the client itself would be the bottleneck


@dataclass
class StepResult:
    offered_qps: float
    seconds: float
    sent: int
    ok: int
    statuses: dict[str, int]  # failures by gRPC status name (and CLIENT_OVERLOADED)
    latencies_ms: list[float]  # of the OK calls, from their scheduled arrival

    def row(self) -> dict:
        """p50 / p99 over all offered calls (failures count as infinitely late); the served rate and latencies."""
        all_ms = np.asarray(self.latencies_ms + [math.inf] * (self.sent - self.ok), dtype=np.float64)
        ok = np.asarray(self.latencies_ms)

        def p(q: float) -> float | None:
            # The nearest-rank percentile: interpolating between two unserved calls would give inf - inf.
            return round(float(np.percentile(all_ms, q, method="inverted_cdf")), 2) if len(all_ms) else None

        return {"offered_qps": self.offered_qps, "seconds": round(self.seconds, 2), "sent": self.sent,
                "ok": self.ok, "served_qps": round(self.ok / self.seconds, 1), "failed": self.statuses,
                "p50_ms": p(50), "p99_ms": p(99),
                "ok_p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
                "ok_p99_ms": round(float(np.percentile(ok, 99)), 2) if len(ok) else None}


async def poisson_step(call: Callable[[int, int], Awaitable[None]], rate: float, seconds: float, channels: int,
                       seed: int = 0) -> StepResult:
    """``call(i, channel)`` at Poisson arrivals of ``rate`` per second for ``seconds``; ``i`` numbers the arrivals."""
    rng = np.random.default_rng(seed)
    n = max(1, int(rng.poisson(rate * seconds)))
    offsets = np.sort(rng.uniform(0.0, seconds, n))  # a Poisson process: n uniform arrivals in the window
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    outstanding = 0
    tasks: set[asyncio.Task] = set()

    async def one(i: int, scheduled: float) -> None:
        nonlocal outstanding
        try:
            await call(i, i % channels)
            latencies.append((time.perf_counter() - scheduled) * 1e3)
        except grpc.aio.AioRpcError as e:
            statuses[e.code().name] += 1
        except Exception as e:  # noqa: BLE001 - counted; a benchmark step must finish
            statuses[type(e).__name__] += 1
        finally:
            outstanding -= 1

    start = time.perf_counter() + 0.05
    for i, offset in enumerate(offsets):
        scheduled = start + float(offset)
        if (delay := scheduled - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        if outstanding >= MAX_OUTSTANDING:
            statuses["CLIENT_OVERLOADED"] += 1
            continue
        outstanding += 1
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    elapsed = max(seconds, time.perf_counter() - start)
    return StepResult(rate, elapsed, n, len(latencies), dict(statuses), latencies)
