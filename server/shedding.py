"""Fast shedding: past capacity the gateway refuses at once (RESOURCE_EXHAUSTED with a ``retry-after-ms`` hint)
instead of queueing without bound, and it refuses a query whose deadline the queue ahead of it would outlast.

``QuerySlots`` bounds the search queries in flight (``max_searches_in_flight``; a SearchBatch counts its queries).
The hint is the running estimate of how long an admitted call takes: about when a slot frees."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import grpc

from server.errors import Overloaded, RpcError
from server.load_metrics import LoadMetrics

EWMA_WEIGHT = 0.1  # of the newest call in the running estimate of a call's duration


class QuerySlots:
    def __init__(self, limit: int, retry_after_min_ms: float, metrics: LoadMetrics) -> None:
        self.limit = limit
        self.retry_after_min_ms = retry_after_min_ms
        self.metrics = metrics
        self.in_flight = 0
        self._call_ms = 10.0

    def retry_after_ms(self) -> float:
        return max(self.retry_after_min_ms, self._call_ms)

    @contextlib.contextmanager
    def admit(self, queries: int) -> Iterator[None]:
        """Holds ``queries`` slots for the block, or refuses at once. A call larger than the limit is admitted
        when nothing else is in flight (it is bounded by max_batch_queries already)."""
        if self.in_flight and self.in_flight + queries > self.limit:
            self.metrics.refused.labels("in_flight").inc()
            raise Overloaded(f"{self.in_flight} queries in flight; the limit is {self.limit}", self.retry_after_ms())
        self.in_flight += queries
        self.metrics.queries_in_flight.set(self.in_flight)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= queries
            self.metrics.queries_in_flight.set(self.in_flight)
            self._call_ms += EWMA_WEIGHT * ((time.monotonic() - t0) * 1e3 - self._call_ms)


def refuse_if_late(expected_wait_s: float, service_s: float, deadline: float | None, retry_after_min_ms: float,
                   metrics: LoadMetrics, max_wait_ms: float = 0.0) -> None:
    """Refuses a query that would still be queued, or running, when its deadline passes (``expected_wait_s``: the
    queue ahead and its own batch), or (``max_wait_ms`` set) that would wait longer than that whatever its deadline.
    The refusal carries a retry hint, except when the deadline is shorter than the query's own batch takes with
    nothing queued (``service_s``): no retry could meet it, so it is DEADLINE_EXCEEDED, as the caller's own deadline
    would have ended it."""
    if deadline is not None:
        left_s = deadline - time.monotonic()
        if left_s < service_s:
            metrics.refused.labels("deadline").inc()
            raise RpcError(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"this call's deadline leaves {max(left_s, 0.0) * 1e3:.1f} ms, and a batch takes about "
                           f"{service_s * 1e3:.0f} ms even with nothing queued: allow more time")
        if expected_wait_s > left_s:
            metrics.refused.labels("deadline").inc()
            raise Overloaded(f"the queue ahead takes about {expected_wait_s * 1e3:.0f} ms, longer than this call's "
                             "deadline allows", max(retry_after_min_ms, expected_wait_s * 1e3))
    if max_wait_ms and expected_wait_s * 1e3 > max_wait_ms:
        metrics.refused.labels("queue_wait").inc()
        raise Overloaded(f"the queue ahead takes about {expected_wait_s * 1e3:.0f} ms; this gateway queues a query "
                         f"for at most {max_wait_ms:.0f} ms", max(retry_after_min_ms, expected_wait_s * 1e3))


def deadline_of(context) -> float | None:
    """The call's deadline on the ``time.monotonic()`` clock, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
