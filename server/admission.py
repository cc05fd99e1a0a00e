"""Bounded decode memory: the bytes that image decodes hold at once, across all requests, stay under a budget.

The cost of a decode is estimated from the image header before any pixel is decoded (``imaging.decode_cost``).
Small images (up to ``inline_decode_max_pixels`` after JPEG draft scaling) are decoded on the event loop at once:
one at a time by construction, so they need no budget and never wait behind large ones. Larger images take their
cost from the budget (first come, first served), waiting while it is spent, for no longer than their deadline
allows, then decode in a pool of ``decode_workers`` threads. An image that costs more than the whole budget is
decoded alone. Memory then stays under max(budget, the largest single decode) whatever the mix of requests."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from server.errors import Overloaded
from server.imaging import Box, decode, decode_cost
from server.load_metrics import LoadMetrics

EWMA_WEIGHT = 0.2  # of the newest decode time in the running estimate behind the retry hint
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_images_to_the_os() -> None:
    """glibc raises its mmap threshold after the first large free (up to 32 MB); past that, Pillow's 16 MB image
    blocks come from the heap of each decoding thread and stay in the process once freed, so RSS grows far past the
    budget (measured: +571 MiB under a 128 MiB budget). A fixed threshold keeps large blocks mmapped: a freed image
    goes back to the OS at once."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


class DecodeAdmission:
    def __init__(self, budget_bytes: int, workers: int, inline_max_pixels: int, retry_after_min_ms: float,
                 metrics: LoadMetrics) -> None:
        self.budget = budget_bytes
        self.inline_max_pixels = inline_max_pixels
        self.retry_after_min_ms = retry_after_min_ms
        self.metrics = metrics
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()
        self._queued = 0  # bytes the waiters will take
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._workers = workers
        self._decode_ms = 50.0  # running estimate of one large decode, refined by every decode

    async def decode(self, im: Image.Image, size: int, deadline: float | None, region: Box | None = None,
                     thumbnail_px: int = 0) -> tuple[np.ndarray, bytes, float]:
        """The image as model input, its thumbnail (b"" when ``thumbnail_px`` is 0; ``imaging.decode``) and the
        milliseconds it waited for the budget. ``deadline``: time.monotonic() by which the call must be answered
        (None: no deadline)."""
        cost = decode_cost(im, size, region, thumbnail_px)  # also sets a JPEG's reduced decode size, read below
        if im.width * im.height <= self.inline_max_pixels:
            return *decode(im, size, region, thumbnail_px), 0.0  # the small lane: a thread hop costs more
        cost = min(cost, self.budget)
        t0 = time.monotonic()
        await self._acquire(cost, deadline)  # raises Overloaded (hinted RESOURCE_EXHAUSTED) past the deadline
        waited_ms = (time.monotonic() - t0) * 1e3
        loop = asyncio.get_running_loop()
        t1 = time.monotonic()
        job = self._pool.submit(decode, im, size, region, thumbnail_px)
        # The budget comes back when the thread is done with the image, not when the caller stops waiting: a call
        # cancelled at its deadline leaves its decode running, holding its memory, until that finishes.
        job.add_done_callback(lambda _: self._release_from_thread(loop, cost))
        pixels, thumbnail = await asyncio.wrap_future(job)
        self._decode_ms += EWMA_WEIGHT * ((time.monotonic() - t1) * 1e3 - self._decode_ms)
        return pixels, thumbnail, waited_ms

    def _release_from_thread(self, loop: asyncio.AbstractEventLoop, cost: int) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._release, cost)

    def _expected_wait_s(self, cost: int) -> float:
        """About how long a decode of ``cost`` bytes submitted now waits: the budget's worth of decodes running and
        queued ahead of it take a decode time each round."""
        rounds_ahead = (self.in_use + self._queued + cost - 1) // self.budget
        return rounds_ahead * self._decode_ms / 1e3

    def _refusal(self, cost: int, what: str) -> Overloaded:
        self.metrics.refused.labels("decode_budget").inc()
        return Overloaded(f"{what}: {self.in_use >> 20} MiB of large images are being decoded and {self._queued >> 20} "
                          f"MiB wait, against a budget of {self.budget >> 20} MiB",
                          max(self.retry_after_min_ms, self._expected_wait_s(cost) * 1e3))

    async def _acquire(self, cost: int, deadline: float | None) -> None:
        if not self._waiters and self.in_use + cost <= self.budget:
            self._take(cost)
            return
        # The wait must leave time for the decode itself (and a little for the rest of the call) before the deadline.
        latest = None if deadline is None else deadline - 2 * self._decode_ms / 1e3
        if latest is not None and time.monotonic() + self._expected_wait_s(cost) > latest:
            raise self._refusal(cost, "this image would wait for the decode budget past its deadline")
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((cost, granted))
        self._queued += cost
        self.metrics.decode_waiting.inc()
        try:
            timeout = None if latest is None else max(0.0, latest - time.monotonic())
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
                self._queued -= cost
                self._grant()  # the ones behind may fit now
        if granted.cancelled():
            raise self._refusal(cost, "this image waited for the decode budget until its deadline")

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
            self._queued -= waiting_cost
            if not granted.done():
                self._take(waiting_cost)
                granted.set_result(None)
        self.metrics.decode_bytes.set(self.in_use)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
