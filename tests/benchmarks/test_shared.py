"""The benchmarks' shared pieces, without servers: settling on made-up looks at Milvus, the load generator, CPU of a
command, and reading what ``vsearch index`` prints and documents."""

from __future__ import annotations

import asyncio
import itertools
import sys

import pytest

from benchmarks import milvus_settle, vsearch_index
from benchmarks.cpu import run_measured
from benchmarks.load import drive
from benchmarks.milvus_settle import Look


def look(ok: bool, segments: tuple[int, ...] = (1, 2)) -> Look:
    return Look(ok, frozenset(segments), frozenset(segments), 10, 10, 0 if ok else 1)


def test_settled_once_the_same_segments_held_for_quiet_s_and_first_ok_is_kept():
    looks = itertools.chain([look(False), look(True, (1,))], itertools.repeat(look(True, (1, 2))))
    shown = []
    settled = milvus_settle.wait_settled(lambda: next(looks), quiet_s=0.025, timeout_s=5, poll_s=0.01,
                                         show=lambda seen, quiet: shown.append(seen.ok))
    assert settled.look.loaded == frozenset({1, 2})
    assert settled.first_ok < settled.began  # the first ok state (segment 1 alone) was not the final one
    assert shown[0] is False


def test_not_settled_in_time_says_what_it_last_saw():
    with pytest.raises(TimeoutError, match="not indexed and settled"):
        milvus_settle.wait_settled(lambda: look(False), quiet_s=1, timeout_s=0.05, poll_s=0.01)


class Segment:
    def __init__(self, segment_id: int, num_rows: int, index_id: int = 0, state: int = milvus_settle.SEALED):
        self.segment_id, self.num_rows, self.index_id, self.state = segment_id, num_rows, index_id, state


class FakeClient:
    def __init__(self, loaded, stored, indexed_rows=0):
        self.loaded, self.stored, self.indexed_rows = loaded, stored, indexed_rows

    def list_loaded_segments(self, name):
        return self.loaded

    def list_persistent_segments(self, name):
        return self.stored

    def describe_index(self, name, index_name):
        return {"indexed_rows": self.indexed_rows}


def test_a_server_look_wants_sealed_indexed_segments_served_as_stored():
    big, small = Segment(1, 5000, index_id=7), Segment(2, 100)
    assert milvus_settle.look_server(FakeClient([big, small], [big, small]), "c", small_rows=1024).ok
    assert not milvus_settle.look_server(FakeClient([big, small], [big, small]), "c").ok  # small one unindexed
    assert not milvus_settle.look_server(FakeClient([big], [big, Segment(3, 10, 8)]), "c").ok  # one not loaded
    assert milvus_settle.look_server(FakeClient([big], [big, Segment(3, 10, 8)]), "c", match_stored=False).ok
    assert not milvus_settle.look_server(FakeClient([big], [big], indexed_rows=4000), "c", rows=5000).ok
    assert milvus_settle.look_server(FakeClient([big], [big], indexed_rows=5000), "c", rows=5000).ok
    assert not milvus_settle.look_server(FakeClient([big], [big]), "c", growing_rows=lambda: 3).ok
    assert not milvus_settle.look_server(FakeClient([], []), "c").ok  # nothing served yet


def test_drive_closed_loop_and_paced():
    async def call(i: int) -> tuple:
        await asyncio.sleep(0.001)
        if i == 3:
            raise RuntimeError("counted, not raised")
        return (i,)

    rows, errors, elapsed = asyncio.run(drive(call, 4, concurrency=2, seconds=0.1))
    assert rows and errors > 0 and elapsed >= 0.1
    assert {r[1] for r in rows} <= {0, 1, 2} and all(r[0] > 0 for r in rows)
    paced, _, _ = asyncio.run(drive(call, 3, concurrency=2, seconds=0.2, rate=50))
    assert 5 <= len(paced) <= 12  # about 50/s for 0.2 s, not as fast as it can


def test_run_measured_counts_the_commands_own_cpu():
    run = run_measured([sys.executable, "-c", "sum(i * i for i in range(3_000_000)); print('done')"])
    assert run.returncode == 0 and "done" in run.output
    assert 0 < run.cpu_s <= run.wall_s * 2 + 0.1


def test_vsearch_index_summary_and_defaults():
    out = "indexing ━━━━ 10/10\n{'model': 'm', 'total': 10, 'indexed': 10, 'skipped_existing': 0, 'errors': 0, " \
          "'first_errors': [], 'seconds': 1.5, 'images_per_s': 6.7}\n"
    assert vsearch_index.parse_summary(out)["indexed"] == 10
    with pytest.raises(ValueError):
        vsearch_index.parse_summary("Traceback ...")
    batch, concurrency, resume = vsearch_index.index_defaults()  # from `vsearch index --help`
    assert batch > 0 and concurrency > 0 and isinstance(resume, bool)
