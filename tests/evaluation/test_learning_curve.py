"""The learning curve: the log-linear fit and its extrapolation by hand, then one checkpoint measured in quick mode."""

from __future__ import annotations

import json

import pytest

from evaluation.headline import ROLES
from evaluation.learning_curve import (
    METRICS,
    epochs_to_reach,
    extrapolate,
    fit_log2,
    learning_curve,
    sha256,
    targets_from_headline,
)
from extractors.registry import REGISTRY, get_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_is_a_line_in_log2_epochs():
    a, b = fit_log2([8, 16, 32], [0.5, 0.6, 0.7])  # +0.1 per doubling, 0.5 at 2^3
    assert b == pytest.approx(0.1) and a == pytest.approx(0.2)
    assert epochs_to_reach((a, b), 0.8) == pytest.approx(64)
    assert epochs_to_reach((0.5, 0.0), 0.8) is None and epochs_to_reach((0.5, -0.1), 0.8) is None  # never
    assert fit_log2([8, 8], [0.5, 0.6]) is None  # one epoch count: no slope


def test_extrapolate_doubles_and_names_the_target():
    points = {8: dict.fromkeys(METRICS, 0.5), 16: dict.fromkeys(METRICS, 0.6)}
    ex = extrapolate(points, {"knn20": 0.8})
    assert ex["knn20"]["at_2x_epochs"] == {"epochs": 32, "value": pytest.approx(0.7)}
    assert ex["knn20"]["at_4x_epochs"]["value"] == pytest.approx(0.8)
    assert ex["knn20"]["epochs_to_target"] == pytest.approx(64)
    assert "target" not in ex["within_group_knn20"]


def test_targets_come_from_the_headline():
    r = ROLES
    h = {"roles": dict(r), "within_group_knn20": {r["supervised_coarse"]: 0.8},
         "near_duplicates": {"a": {r["supervised"]: 0.2}, "b": {r["supervised"]: 0.4}}, "geometric_levels": ["a", "b"],
         "label_efficiency_knn20": {"10": {"dino_features": 0.5, "trained_on_these_labels": 0.6}}}
    t = targets_from_headline(h)
    assert t == {"knn20": 0.86, "within_group_knn20": pytest.approx(0.85), "geometric_mean_r_at_1": pytest.approx(0.45),
                 "label_efficiency_10": pytest.approx(0.7)}


def test_one_checkpoint_quick(tmp_path):
    weights = get_spec(ROLES["dino"]).weights()
    h = {"roles": dict(ROLES), "within_group_knn20": {}, "near_duplicates": {}, "geometric_levels": [],
         "label_efficiency_knn20": {}}
    res = learning_curve({18: weights}, tmp_path, quick=True, headline=h)
    point = res["points"]["18"]
    for m in METRICS:
        assert 0.1 < point[m] <= 1.0
    assert res["extrapolated"]["knn20"]["fit"] is None  # one point: nothing to extrapolate
    assert "extrapolation" in res["note"]
    assert json.loads((tmp_path / "learning_curve.json").read_text())["points"]["18"] == point
    assert (tmp_path / "figures" / "learning_curve.png").stat().st_size > 1000
    assert not [n for n in REGISTRY if "@" in n]  # the checkpoint's registry entry is gone again
    assert res["checkpoints"]["18"]["sha256"] == sha256(weights)
    # the same file again is read back, not measured: a sentinel in the saved point comes back unchanged
    saved = json.loads((tmp_path / "learning_curve.json").read_text())
    saved["points"]["18"]["wall_s"] = -1.0
    (tmp_path / "learning_curve.json").write_text(json.dumps(saved))
    assert learning_curve({18: weights}, tmp_path, quick=True, headline=h)["points"]["18"]["wall_s"] == -1.0
