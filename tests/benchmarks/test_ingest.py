"""benchmarks/ingest.py quick mode end to end (real Triton, Milvus and gateway): structure and sanity, no timings."""

from __future__ import annotations

import pytest

from benchmarks import ingest
from benchmarks.vsearch_index import index_defaults
from tests.fixtures.benchmarks import run_quick

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    return run_quick(tmp_path_factory, ingest)


def test_headline_indexes_every_image_asked(quick_result):
    result, _ = quick_result
    h = result["headline"]
    assert (h["batch_size"], h["concurrency"], h["resume"]) == index_defaults()
    assert h["images"] == h["indexed"] == 2000
    assert h["errors"] == 0 and h["skipped_existing"] == 0
    assert h["images_per_s"] > 0 and h["seconds"] > 0 and h["wall_s"] >= h["seconds"]
    assert set(h["cpu_s"]) == {"client", "gateway", "triton", "milvus"}
    assert h["client_png_encode_s"] > 0
    assert h["gateway"]["upsert_rpcs"] == -(-2000 // h["batch_size"])
    assert h["triton"]["inferences"] == 2000  # every image embedded exactly once


def test_knob_sweep_reindexes_the_same_subset_for_every_setting(quick_result):
    result, _ = quick_result
    sweep = result["sweep"]
    settings = {(s["batch_size"], s["concurrency"], s["resume"]) for s in sweep["settings"]}
    assert index_defaults() in settings and len(settings) >= 3
    for s in sweep["settings"]:
        assert s["indexed"] == [sweep["images"]] * sweep["rounds"]  # the deletes in between took effect
        assert s["errors"] == 0 and s["images_per_s_mean"] > 0
        assert all(r["skipped_existing"] == 0 for r in s["runs"])
    assert (sweep["best"]["batch_size"], sweep["best"]["concurrency"], sweep["best"]["resume"]) in settings


def test_results_written_to_the_redirected_folder_and_rendered(quick_result):
    result, stored = quick_result
    assert stored is not None  # written to the redirected folder
    assert stored["headline"]["indexed"] == result["headline"]["indexed"]
    assert stored["machine"]["cpus"] >= 1
    assert ingest.targets(stored) == []
    text = ingest.markdown(stored)
    assert text.startswith("## ") and "images/s" in text and "CLI default" in text
