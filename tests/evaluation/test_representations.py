"""The representations measurements end to end in quick mode: every JSON, headline.json in the issue's shape
(checked by evaluation.headline.check_shape) and the report, from the committed checkpoints."""

from __future__ import annotations

import json

import pytest

from evaluation import representations
from evaluation.headline import ROLES


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("representations")
    return out, representations.run(out, quick=True)


def test_every_measurement_and_the_headline_are_written(quick_run):
    out, headline = quick_run
    for name in representations.MEASUREMENTS:
        assert json.loads((out / f"{name}.json").read_text())
    saved = json.loads((out / "headline.json").read_text())
    assert saved == json.loads(json.dumps(headline))
    assert saved["roles"] == ROLES
    assert saved["near_duplicates"]["identity"][ROLES["pixels"]] == 1.0  # the sanity level
    assert set(saved["geometric_levels"]) <= set(saved["near_duplicates"])
    assert set(saved["label_efficiency_knn20"]) <= {"1", "10", "100"}
    assert all(t["met"] in (True, False, None) for t in saved["targets"])


def test_the_report_reads_the_numbers(quick_run):
    out, headline = quick_run
    text = (out / "representations.md").read_text()
    assert "## Reading" in text and "Graded near-duplicates" in text
    first = headline["targets"][0]
    if first["met"] is not None:
        assert f"measured {first['measured']:.3f}" in text
    assert (out / "figures" / "attention_on_object.png").stat().st_size > 1000


def test_the_report_shows_a_learning_curve_labelled_as_extrapolation(quick_run):
    from evaluation.learning_curve import METRICS, extrapolate
    from evaluation.representations_report import write_representations_report

    out, headline = quick_run
    points = {8: dict.fromkeys(METRICS, 0.5), 16: dict.fromkeys(METRICS, 0.6)}
    lc = {"quick": True, "points": {str(e): v for e, v in points.items()},
          "extrapolated": extrapolate(points, {"knn20": 0.8, "within_group_knn20": 0.4})}
    (out / "learning_curve.json").write_text(json.dumps(lc))
    try:  # the folder is the module's: the other tests must not see this file
        results = {name: json.loads((out / f"{name}.json").read_text()) for name in representations.MEASUREMENTS}
        text = write_representations_report(results, headline, out).read_text()
    finally:
        (out / "learning_curve.json").unlink()
    assert "## Learning curve" in text and "**Extrapolated, not measured:**" in text
    assert "| knn20 | +0.100 | 0.700 | 0.800 | 0.800 | 64 |" in text  # 0.6 at 16, +0.1 per doubling: 0.8 at 64
