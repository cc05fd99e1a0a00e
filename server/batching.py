"""Micro-batching of concurrent calls: queries that arrive together are embedded in one Triton call and searched
in one Milvus call, instead of one call each.

There is no timer. The first call for an idle key goes out at once, so a lone query waits for nothing and
concurrency 1 takes the same path as before; calls that arrive while ``max_in_flight`` batches of their key are
out wait for the next batch. Under load the batches grow by themselves to what the backend absorbs, and the
per-call costs (a gRPC round trip, a python-backend execution in Triton, a Milvus proxy request) are paid once
per batch. Triton's own dynamic batcher does the same across gateways; this one saves the round trips too.

A call may carry a deadline (``time.monotonic()``): when a batch forms, queued calls whose deadline has passed, or
whose caller gave up, are dropped before any backend work and counted (``on_drop``), and the batch takes no more
calls than it is expected to answer before the earliest of their deadlines (batch time fitted as a + b * n).
``expected_wait_s`` estimates, from the recent batch durations, how long a call submitted now would take: the
shedder refuses one it can't serve in time."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")
EWMA_WEIGHT = 0.2  # of the newest batch in the running estimate of a batch's duration


class QueueExpired(TimeoutError):
    """A queued call's deadline passed before its batch left: it was never sent (DEADLINE_EXCEEDED)."""


class Coalescer(Generic[K, T, R]):
    """``await submit(key, item)`` -> the item's result from ``run_batch(key, items)``, which gets every item
    submitted under ``key`` while earlier batches were in flight (at most ``max_batch``) and returns one result
    per item, in order. If the batch fails, every caller in it gets the exception."""

    def __init__(self, run_batch: Callable[[K, list[T]], Awaitable[list[R]]], max_batch: int,
                 max_in_flight: int = 1, on_drop: Callable[[str, int], None] | None = None) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.on_drop = on_drop  # (reason "deadline" | "cancelled", count) for each drop of queued calls
        self._pending: dict[K, list[tuple[T, asyncio.Future, float]]] = {}
        self.cost = BatchCost()  # all keys: they share the backends
        self._in_flight: dict[K, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0  # counters for tests and metrics: how much coalescing happened
        self.items = 0

    async def submit(self, key: K, item: T, deadline: float | None = None) -> R:
        (result,) = await self.submit_many(key, [item], deadline)
        return result

    async def submit_many(self, key: K, items: list[T], deadline: float | None = None) -> list[R]:
        """Several items of one caller, queued together: on an idle key they leave in the same batch."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        expires = math.inf if deadline is None else deadline
        self._pending.setdefault(key, []).extend((item, f, expires) for item, f in zip(items, futures, strict=True))
        self._start(key)
        if len(futures) == 1:  # one Search: no gathering future between it and its result
            return [await futures[0]]
        return list(await asyncio.gather(*futures))

    def expected_wait_s(self, key: K, items: int = 1) -> float:
        """About how long ``items`` submitted now under ``key`` would take to be answered: the batches queued
        ahead of them (and a full round of those in flight), then their own, at the recent batch duration."""
        queued = len(self._pending.get(key, ()))
        batch_s = self.cost.seconds(min(queued + items, self.max_batch))
        busy = self._in_flight.get(key, 0) >= self.max_in_flight
        rounds = (queued + items + self.max_batch - 1) // self.max_batch / self.max_in_flight
        return (rounds + busy) * batch_s

    def service_s(self, items: int = 1) -> float:
        """About how long a batch of ``items`` takes with nothing queued ahead (the recent batch duration)."""
        return self.cost.seconds(min(items, self.max_batch))

    def _live(self, queue: list[tuple[T, asyncio.Future, float]]) -> list[tuple[T, asyncio.Future, float]]:
        """The queued calls still worth sending: callers that gave up or whose deadline passed are dropped."""
        now = time.monotonic()
        live, cancelled, expired = [], 0, 0
        for entry in queue:
            _, future, expires = entry
            if future.done():
                cancelled += 1
            elif expires <= now:
                future.set_exception(QueueExpired("the deadline passed while the query was queued; it was not run"))
                expired += 1
            else:
                live.append(entry)
        if self.on_drop:
            for reason, n in (("cancelled", cancelled), ("deadline", expired)):
                if n:
                    self.on_drop(reason, n)
        return live

    def _fitting(self, queue: list[tuple[T, asyncio.Future, float]]) -> int:
        """How many queued calls go in the next batch: the most (up to ``max_batch``, at least one) whose batch is
        expected to end before the earliest of their deadlines. A batch too large for its callers' deadlines would
        answer none of them in time (measured: photo search offered past capacity served 17 of 60 queries/s, the
        rest timing out inside batches of dozens); the calls left out lead the next batch."""
        now, earliest, size = time.monotonic(), math.inf, 0
        for i, (_, _, expires) in enumerate(queue[: self.max_batch]):
            earliest = min(earliest, expires)
            if i and now + self.cost.seconds(i + 1) > earliest:
                break
            size = i + 1
        return size

    def _start(self, key: K) -> None:
        while self._pending.get(key) and self._in_flight.get(key, 0) < self.max_in_flight:
            queue = self._live(self._pending.pop(key))
            size = self._fitting(queue)
            batch, rest = queue[:size], queue[size:]
            if rest:
                self._pending[key] = rest
            if not batch:
                continue
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            task = asyncio.create_task(self._run(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, batch: list[tuple[T, asyncio.Future, float]]) -> None:
        self.batches += 1
        self.items += len(batch)
        t0 = time.monotonic()
        try:
            results = await self.run_batch(key, [item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except asyncio.CancelledError:
            for _, future, _ in batch:
                future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - handed to every caller of the batch, who maps it to a status
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(e)
        finally:
            took = time.monotonic() - t0
            self.cost.add(len(batch), took)
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
            self._start(key)


class BatchCost:
    """How long a batch of n items takes: a + b * n (a per-call cost, then per item), fitted to the recent batches
    by least squares with exponential forgetting. A deep queue leaves in full batches, which take longer than the
    small ones measured while it was short; a per-batch average would under- or overestimate them."""

    def __init__(self) -> None:
        self.n = self.t = self.nn = self.nt = 0.0  # forgetting averages of n, t, n^2 and n * t
        self.seen = False

    def add(self, n: int, seconds: float) -> None:
        w = 1.0 if not self.seen else EWMA_WEIGHT
        self.seen = True
        self.n += w * (n - self.n)
        self.t += w * (seconds - self.t)
        self.nn += w * (n * n - self.nn)
        self.nt += w * (n * seconds - self.nt)

    def seconds(self, n: int) -> float:
        var = self.nn - self.n * self.n
        slope = max(0.0, (self.nt - self.n * self.t) / var) if var > 1e-6 else 0.0
        return max(0.0, self.t + slope * (n - self.n))
