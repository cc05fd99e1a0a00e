"""The micro-batcher on its own: batches form under concurrency, a lone call goes out at once, failures reach
every caller of the batch, and callers that gave up are not sent."""

from __future__ import annotations

import asyncio

import pytest

from server.batching import Coalescer


class Recorder:
    """A batch function that records the batches it got and takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.02, fail: bool = False) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, key: str, items: list[int]) -> list[int]:
        self.batches.append((key, list(items)))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("backend refused the batch")
        return [i * 10 for i in items]


def test_a_lone_call_is_sent_at_once_as_a_batch_of_one():
    async def main():
        rec = Recorder()
        c = Coalescer(rec, max_batch=8)
        assert await c.submit("m", 3) == 30
        return rec

    rec = asyncio.run(main())
    assert rec.batches == [("m", [3])]


def test_concurrent_calls_share_batches_and_get_their_own_results():
    async def main():
        rec = Recorder()
        c = Coalescer(rec, max_batch=8)
        results = await asyncio.gather(*[c.submit("m", i) for i in range(20)])
        return rec, results

    rec, results = asyncio.run(main())
    assert results == [i * 10 for i in range(20)]
    sizes = [len(items) for _, items in rec.batches]
    # the first call goes alone, the 19 queued behind it go in batches of at most 8
    assert sizes[0] == 1 and max(sizes) == 8 and sum(sizes) == 20 and len(sizes) == 4


def test_keys_are_batched_separately():
    async def main():
        rec = Recorder()
        c = Coalescer(rec, max_batch=64)
        await asyncio.gather(*[c.submit(k, i) for i in range(6) for k in ("a", "b")])
        return rec

    rec = asyncio.run(main())
    for key, items in rec.batches:
        assert all(isinstance(i, int) for i in items) and key in ("a", "b")
    assert sorted(i for k, items in rec.batches if k == "a" for i in items) == list(range(6))


def test_max_in_flight_bounds_concurrent_batches():
    async def main():
        in_flight, peak = 0, 0

        async def run(key, items):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return items

        c = Coalescer(run, max_batch=2, max_in_flight=2)
        await asyncio.gather(*[c.submit("m", i) for i in range(12)])
        return peak

    assert asyncio.run(main()) == 2


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    async def main():
        rec = Recorder(fail=True)
        c = Coalescer(rec, max_batch=4)
        results = await asyncio.gather(*[c.submit("m", i) for i in range(5)], return_exceptions=True)
        rec.fail = False
        return results, await c.submit("m", 7)

    results, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "refused" in str(r) for r in results)
    assert after == 70


def test_callers_that_gave_up_are_not_sent():
    async def main():
        rec = Recorder(delay=0.05)
        c = Coalescer(rec, max_batch=8)
        first = asyncio.create_task(c.submit("m", 0))
        await asyncio.sleep(0)  # batch [0] is in flight
        waiting = [asyncio.create_task(c.submit("m", i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        waiting[1].cancel()  # gives up while queued (a deadline, a client that went away)
        await first
        done = await asyncio.gather(*waiting, return_exceptions=True)
        return rec, done

    rec, done = asyncio.run(main())
    assert rec.batches == [("m", [0]), ("m", [1, 3])]
    assert done[0] == 10 and isinstance(done[1], asyncio.CancelledError) and done[2] == 30


def test_a_batch_returning_the_wrong_number_of_results_is_an_error_not_a_mixup():
    async def short(key, items):
        return items[:-1]

    async def main():
        c = Coalescer(short, max_batch=8)
        return await asyncio.gather(*[c.submit("m", i) for i in range(3)], return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "returned" in str(r) for r in results)


@pytest.mark.parametrize("bad", [{"max_batch": 0}, {"max_batch": 1, "max_in_flight": 0}])
def test_limits_are_checked(bad):
    with pytest.raises(ValueError):
        Coalescer(Recorder(), **bad)


def test_items_submitted_together_leave_in_one_batch():
    """SearchBatch submits its queries of one key together: on an idle key they share the first batch, and a
    second caller's items wait for the next one (max_batch still bounds each batch)."""
    async def main():
        rec = Recorder()
        c = Coalescer(rec, max_batch=4)
        first = asyncio.create_task(c.submit_many("m", [1, 2, 3, 4, 5]))
        second = asyncio.create_task(c.submit_many("m", [6]))
        return rec, await first, await second

    rec, first, second = asyncio.run(main())
    assert first == [10, 20, 30, 40, 50] and second == [60]
    assert rec.batches == [("m", [1, 2, 3, 4]), ("m", [5, 6])]
