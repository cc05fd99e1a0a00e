"""The admission pieces on their own, in one event loop: the decode budget (real Pillow decodes), the bound on
queries in flight, the deadline refusal, and the coalescer dropping queued calls whose deadline passed. The gateway
process under real load is tests/reliability/test_overload.py."""

from __future__ import annotations

import asyncio
import io
import time

import grpc
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from server.admission import DecodeAdmission
from server.batching import BatchCost, Coalescer, QueueExpired
from server.errors import RETRY_AFTER_KEY, Overloaded, RpcError, trailing_metadata_of
from server.imaging import decode_cost, open_image
from server.load_metrics import LoadMetrics
from server.shedding import QuerySlots, refuse_if_late

MiB = 1 << 20


def opened(side: int, fmt: str = "PNG", mode: str = "RGB") -> Image.Image:
    buf = io.BytesIO()
    Image.new(mode, (side, side), 128).save(buf, fmt)
    return open_image(buf.getvalue(), 1 << 30, 1 << 30)


def admission(budget: int, inline_max_pixels: int = 64 * 64) -> DecodeAdmission:
    return DecodeAdmission(budget, workers=2, inline_max_pixels=inline_max_pixels, retry_after_min_ms=20,
                           metrics=LoadMetrics(CollectorRegistry()))


def test_decode_cost_is_read_from_the_header_and_a_jpeg_costs_its_draft_size():
    assert decode_cost(opened(1000), 28) == 1000 * 1000 * 4  # Pillow holds RGB in 32 bits; no conversion copy
    assert decode_cost(opened(1000, mode="L"), 28) == 1000 * 1000 * (1 + 4)  # grey, then its RGB copy
    assert decode_cost(opened(1000, mode="RGBA"), 28) > decode_cost(opened(1000), 28)  # compositing on white
    jpeg = opened(2000, "JPEG")
    assert decode_cost(jpeg, 224) == 250 * 250 * 4  # decoded at 1/8 scale: 250 px still >= 224
    assert jpeg.size == (250, 250)


def test_decode_cost_counts_the_copies_decode_makes():
    def with_orientation(orientation: int) -> Image.Image:
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.new("RGB", (1000, 1000), 128).save(buf, "PNG", exif=exif.tobytes())
        return open_image(buf.getvalue(), 1 << 30, 1 << 30)

    plain = 1000 * 1000 * 4
    assert decode_cost(with_orientation(1), 28) == plain  # EXIF that turns nothing: no copy (to_rgb makes none)
    assert decode_cost(with_orientation(6), 28) == 2 * plain  # a turn copies the image
    assert decode_cost(opened(1000), 28, region=(0.0, 0.0, 0.5, 0.5)) == plain + plain // 4  # the crop's copy


def test_large_decodes_share_the_budget_and_small_images_never_wait():
    async def main():
        a = admission(budget=int(1000 * 1000 * 4 * 1.5))  # room for one 1000 px decode at a time
        peak = 0

        async def large() -> float:
            nonlocal peak
            pixels, _, waited = await a.decode(opened(1000), 28, None)
            assert pixels.shape == (3, 28, 28)
            return waited

        async def watch():
            nonlocal peak
            while True:
                peak = max(peak, a.in_use)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        waits = asyncio.gather(*[large() for _ in range(4)])
        await asyncio.sleep(0)
        small, _, small_wait = await a.decode(opened(32), 28, None)  # while the large ones queue
        large_waits = await waits
        watcher.cancel()
        return peak, a.in_use, small_wait, large_waits, a.budget

    peak, left, small_wait, large_waits, budget = asyncio.run(main())
    assert 0 < peak <= budget and left == 0
    assert small_wait == 0.0
    assert min(large_waits) < 1.0 < max(large_waits)  # the first went at once (ms), the later ones waited


def test_an_image_costing_more_than_the_budget_is_decoded_alone():
    async def main():
        a = admission(budget=1 * MiB)
        pixels, _, _ = await a.decode(opened(1000), 28, None)  # 4 MB > 1 MiB
        return pixels.shape, a.in_use

    assert asyncio.run(main()) == ((3, 28, 28), 0)


def test_a_cancelled_decode_keeps_its_budget_until_its_thread_is_done():
    async def main():
        a = admission(budget=int(3000 * 3000 * 4 * 1.5))
        call = asyncio.create_task(a.decode(opened(3000), 28, None))  # ~36 MB: a decode of some milliseconds
        while a.in_use == 0:
            await asyncio.sleep(0)
        call.cancel()  # as the gRPC layer does at a deadline
        with pytest.raises(asyncio.CancelledError):
            await call
        held_after_cancel = a.in_use  # the thread still holds the image
        while a.in_use:
            await asyncio.sleep(0.001)
        return held_after_cancel, a.in_use

    held, left = asyncio.run(main())
    assert held == 3000 * 3000 * 4 and left == 0


def test_a_decode_that_would_wait_past_its_deadline_is_refused_with_a_hint():
    async def main():
        a = admission(budget=1000 * 1000 * 4)
        first = asyncio.create_task(a.decode(opened(1000), 28, None))
        await asyncio.sleep(0)
        assert a.in_use > 0
        with pytest.raises(Overloaded) as e:
            await a.decode(opened(1000), 28, time.monotonic() + 0.001)
        await first
        return e.value, a.in_use

    refusal, left = asyncio.run(main())
    assert left == 0 and refusal.retry_after_ms >= 20
    assert trailing_metadata_of(refusal) == ((RETRY_AFTER_KEY, str(refusal.retry_after_ms)),)


def test_queries_past_the_in_flight_limit_are_refused_at_once():
    slots = QuerySlots(limit=2, retry_after_min_ms=20, metrics=LoadMetrics(CollectorRegistry()))
    with slots.admit(2), pytest.raises(Overloaded), slots.admit(1):
        pass
    with slots.admit(5):  # alone, a batch larger than the limit is admitted
        assert slots.in_flight == 5
    assert slots.in_flight == 0


def test_a_query_the_queue_would_make_late_is_refused():
    metrics = LoadMetrics(CollectorRegistry())
    refuse_if_late(0.5, 0.01, None, 20, metrics)  # no deadline: never refused
    refuse_if_late(0.01, 0.01, time.monotonic() + 1, 20, metrics)
    with pytest.raises(Overloaded) as e:
        refuse_if_late(0.5, 0.01, time.monotonic() + 0.1, 20, metrics)
    assert e.value.retry_after_ms >= 500
    with pytest.raises(Overloaded):  # a latency objective refuses it whatever its deadline
        refuse_if_late(0.2, 0.01, None, 20, metrics, max_wait_ms=50)
    refuse_if_late(0.02, 0.01, None, 20, metrics, max_wait_ms=50)


def test_a_deadline_shorter_than_an_idle_batch_is_deadline_exceeded_without_a_hint():
    """No retry could meet it (the hint would make the SDK resend a call that can never succeed)."""
    metrics = LoadMetrics(CollectorRegistry())
    with pytest.raises(RpcError) as e:
        refuse_if_late(0.5, 0.05, time.monotonic() + 0.01, 20, metrics)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and not isinstance(e.value, Overloaded)
    assert "allow more time" in str(e.value)


def test_queued_calls_whose_deadline_passed_are_dropped_before_the_backend_and_counted():
    drops: list[tuple[str, int]] = []
    sent: list[list[int]] = []

    async def run_batch(key: str, items: list[int]) -> list[int]:
        sent.append(list(items))
        await asyncio.sleep(0.05)
        return [i * 10 for i in items]

    async def main():
        c = Coalescer(run_batch, max_batch=8, on_drop=lambda reason, n: drops.append((reason, n)))
        first = asyncio.create_task(c.submit("m", 1))
        await asyncio.sleep(0)
        late = asyncio.create_task(c.submit("m", 2, deadline=time.monotonic() + 0.01))  # expires in the queue
        on_time = asyncio.create_task(c.submit("m", 3, deadline=time.monotonic() + 5))
        assert await first == 10 and await on_time == 30
        with pytest.raises(QueueExpired):
            await late
        return c.expected_wait_s("m")

    expected = asyncio.run(main())
    assert sent == [[1], [3]]
    assert drops == [("deadline", 1)]
    assert expected >= 0.04  # one batch at about the measured 50 ms


def test_the_batch_cost_model_predicts_full_batches_from_small_ones():
    cost = BatchCost()
    for n in (1, 2, 1, 8, 4, 16, 1, 3):
        cost.add(n, 0.009 + 0.001 * n)  # a per-call cost, then per item
    assert cost.seconds(64) == pytest.approx(0.073, rel=0.01)
    only_singles = BatchCost()
    only_singles.add(1, 0.01)
    assert only_singles.seconds(64) == pytest.approx(0.01)  # nothing to fit a slope to: the mean


def test_a_batch_takes_no_more_calls_than_it_can_answer_before_their_deadlines():
    sizes: list[int] = []
    release = asyncio.Event()

    async def run_batch(key: str, items: list[int]) -> list[int]:
        sizes.append(len(items))
        await release.wait()  # the first batch holds the key while the others queue
        return items

    async def main():
        c = Coalescer(run_batch, max_batch=64)
        # What the cost model has seen: 100 ms a call, then 50 ms an item (slow on purpose, so that the deadline's
        # room is seconds and a stalled event loop cannot change the answer).
        for n in (1, 4, 2, 8, 16):
            c.cost.add(n, 0.100 + 0.050 * n)
        first = asyncio.create_task(c.submit("m", -1))
        await asyncio.sleep(0)
        deadline = time.monotonic() + 1.5  # room for a batch of at most 28
        rest = asyncio.gather(*[c.submit("m", i, deadline) for i in range(40)])
        await asyncio.sleep(0)
        release.set()
        await first
        return await rest

    assert asyncio.run(main()) == list(range(40))
    assert sizes[0] == 1 and 1 < sizes[1] <= 28 and sum(sizes[1:]) == 40  # not one batch of 40


def test_decode_cost_decodes_nothing():
    """Estimating must not load the pixels (Pillow's getexif decodes a whole PNG, outside the budget): a truncated
    PNG, which fails as soon as it is decoded, is estimated without an error."""
    buf = io.BytesIO()
    Image.effect_noise((1000, 1000), 64).convert("RGB").save(buf, "PNG")
    truncated = open_image(buf.getvalue()[: len(buf.getvalue()) // 2], 1 << 30, 1 << 30)
    assert decode_cost(truncated, 28) == 1000 * 1000 * 4
