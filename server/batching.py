"""Micro-batching of concurrent calls: queries that arrive together are embedded in one Triton call and searched
in one Milvus call, instead of one call each.

There is no timer. The first call for an idle key goes out at once, so a lone query waits for nothing and
concurrency 1 takes the same path as before; calls that arrive while ``max_in_flight`` batches of their key are
out wait for the next batch. Under load the batches grow by themselves to what the backend absorbs, and the
per-call costs (a gRPC round trip, a python-backend execution in Triton, a Milvus proxy request) are paid once
per batch. Triton's own dynamic batcher does the same across gateways; this one saves the round trips too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[K, T, R]):
    """``await submit(key, item)`` -> the item's result from ``run_batch(key, items)``, which gets every item
    submitted under ``key`` while earlier batches were in flight (at most ``max_batch``) and returns one result
    per item, in order. If the batch fails, every caller in it gets the exception."""

    def __init__(self, run_batch: Callable[[K, list[T]], Awaitable[list[R]]], max_batch: int,
                 max_in_flight: int = 1) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: dict[K, list[tuple[T, asyncio.Future]]] = {}
        self._in_flight: dict[K, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0  # counters for tests and metrics: how much coalescing happened
        self.items = 0

    async def submit(self, key: K, item: T) -> R:
        (result,) = await self.submit_many(key, [item])
        return result

    async def submit_many(self, key: K, items: list[T]) -> list[R]:
        """Several items of one caller, queued together: on an idle key they leave in the same batch."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.setdefault(key, []).extend(zip(items, futures, strict=True))
        self._start(key)
        if len(futures) == 1:  # one Search: no gathering future between it and its result
            return [await futures[0]]
        return list(await asyncio.gather(*futures))

    def _start(self, key: K) -> None:
        while self._pending.get(key) and self._in_flight.get(key, 0) < self.max_in_flight:
            queue = self._pending.pop(key)
            # Callers that gave up (cancelled, deadline) while queued are not sent at all.
            queue = [(item, f) for item, f in queue if not f.done()]
            batch, rest = queue[: self.max_batch], queue[self.max_batch:]
            if rest:
                self._pending[key] = rest
            if not batch:
                continue
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            task = asyncio.create_task(self._run(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, batch: list[tuple[T, asyncio.Future]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self.run_batch(key, [item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - handed to every caller of the batch, who maps it to a status
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
            self._start(key)
