"""Bounded decode memory: the bytes that image decodes hold at once, across all requests, stay under a budget.

The cost of a decode is estimated from the image header before any pixel is decoded (``imaging.decode_cost``).
Small images (up to ``inline_decode_max_pixels`` after JPEG draft scaling) are decoded on the event loop at once:
one at a time by construction, so they need no budget and never wait behind large ones. Larger images take their
cost from the budget (first come, first served), waiting while it is spent, for no longer than their deadline
allows, then decode in a pool of ``decode_workers`` threads. An image that costs more than the whole budget is
decoded alone. Memory then stays under max(budget, the largest single decode) whatever the mix of requests."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from server.errors import Overloaded
from server.imaging import decode_cost, to_model_input
from server.load_metrics import LoadMetrics

EWMA_WEIGHT = 0.2  # of the newest decode time in the running estimate behind the retry hint


class DecodeAdmission:
    def __init__(self, budget_bytes: int, workers: int, inline_max_pixels: int, retry_after_min_ms: float,
                 metrics: LoadMetrics) -> None:
        self.budget = budget_bytes
        self.inline_max_pixels = inline_max_pixels
        self.retry_after_min_ms = retry_after_min_ms
        self.metrics = metrics
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._workers = workers
        self._decode_ms = 50.0  # running estimate of one large decode, refined by every decode

    async def decode(self, im: Image.Image, size: int, deadline: float | None) -> tuple[np.ndarray, float]:
        """The image as model input, and the milliseconds it waited for the budget. ``deadline``: time.monotonic()
        by which the call must be answered (None: no deadline)."""
        cost = decode_cost(im, size)
        if im.width * im.height <= self.inline_max_pixels:
            return to_model_input(im, size), 0.0  # the small lane: a thread hop costs more than the decode
        cost = min(cost, self.budget)
        t0 = time.monotonic()
        await self._acquire(cost, deadline)
        waited_ms = (time.monotonic() - t0) * 1e3
        try:
            t1 = time.monotonic()
            pixels = await asyncio.get_running_loop().run_in_executor(self._pool, to_model_input, im, size)
            self._decode_ms += EWMA_WEIGHT * ((time.monotonic() - t1) * 1e3 - self._decode_ms)
            return pixels, waited_ms
        finally:
            self._release(cost)

    def _retry_after_ms(self) -> float:
        """About when the decodes queued now are done."""
        return max(self.retry_after_min_ms, self._decode_ms * (len(self._waiters) + 1) / self._workers)

    async def _acquire(self, cost: int, deadline: float | None) -> None:
        if not self._waiters and self.in_use + cost <= self.budget:
            self._take(cost)
            return
        if deadline is not None and time.monotonic() + self._retry_after_ms() / 1e3 > deadline:
            self.metrics.refused.labels("decode_budget").inc()
            raise Overloaded(f"the decode budget ({self.budget >> 20} MiB) is spent by {len(self._waiters)} queued "
                             "and the running decodes of large images, past this call's deadline",
                             self._retry_after_ms())
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((cost, granted))
        self.metrics.decode_waiting.inc()
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait({granted}, timeout=timeout)
        except BaseException:
            if granted.done() and not granted.cancelled():  # granted just as the caller was cancelled
                self._release(cost)
            raise
        finally:
            self.metrics.decode_waiting.dec()
            if not granted.done():  # timed out or the caller was cancelled: leave the queue, take nothing
                granted.cancel()
                self._waiters.remove((cost, granted))
                self._grant()  # the ones behind may fit now
        if granted.cancelled() or not granted.done():
            self.metrics.refused.labels("decode_budget").inc()
            raise Overloaded(f"this image waited for the decode budget ({self.budget >> 20} MiB) until its "
                             "deadline", self._retry_after_ms())

    def _take(self, cost: int) -> None:
        self.in_use += cost
        self.metrics.decode_bytes.set(self.in_use)

    def _release(self, cost: int) -> None:
        self.in_use -= cost
        self._grant()

    def _grant(self) -> None:
        # First come, first served: the head of the queue is granted as soon as it fits, the rest after it.
        while self._waiters and self.in_use + self._waiters[0][0] <= self.budget:
            waiting_cost, granted = self._waiters.popleft()
            if not granted.done():
                self._take(waiting_cost)
                granted.set_result(None)
        self.metrics.decode_bytes.set(self.in_use)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
