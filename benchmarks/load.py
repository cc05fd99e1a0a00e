"""The load generator: ``concurrency`` asyncio tasks in one process calling a server, closed loop or paced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def drive(call: Callable[[int], Awaitable[tuple]], n_items: int, concurrency: int, seconds: float,
                rate: float | None = None) -> tuple[list[tuple], int, float]:
    """``concurrency`` tasks calling ``call(i)`` (``i`` cycles over ``n_items``) for ``seconds``; returns the rows
    (client_ms, *what the call returned), the number of calls that raised, and the seconds it took.

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
                timings = await call(i % n_items)
                rows.append(((time.perf_counter() - t0) * 1e3, *timings))
            except Exception:  # noqa: BLE001 - counted and reported; a benchmark run must finish
                errors[0] += 1
            i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return rows, errors[0], time.perf_counter() - t0
