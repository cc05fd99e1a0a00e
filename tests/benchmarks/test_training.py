"""benchmarks/training quick mode end to end (the real training loops on a real folder): structure and sanity, no
timings asserted."""

from __future__ import annotations

from benchmarks import training
from benchmarks.training.benchmark import BASELINE, QUICK_PRESETS
from tests.fixtures.benchmarks import run_quick


def test_quick_run_measures_each_preset_against_the_baseline(tmp_path_factory):
    result, stored = run_quick(tmp_path_factory, training)
    assert stored is not None and stored["quick"]
    assert set(result["presets"]) == {"/".join(p) for p in QUICK_PRESETS}
    assert result["presets"]["/".join(BASELINE)]["vs_baseline"] == 1.0
    for row in result["presets"].values():
        assert row["images_per_s"] > 0 and row["seconds"][1] > 0
    section = training.markdown(stored)
    assert "Training throughput" in section and "epoch min" in section
