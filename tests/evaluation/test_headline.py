"""headline.json: its shape and the targets worked out from it, on hand-made numbers."""

from __future__ import annotations

import pytest

from evaluation.headline import ROLES, build_headline, mean_geometric_r1

D, S, C, P = ROLES["dino"], ROLES["supervised"], ROLES["supervised_coarse"], ROLES["pixels"]


def example(**over) -> dict:
    args = dict(
        knn20={D: 0.87, S: 0.88, C: 0.80, P: 0.846},
        near_duplicates={"identity": {D: 1.0, S: 1.0, P: 1.0}, "flip": {D: 0.9, S: 0.3, P: 0.1},
                         "rotate_10": {D: 0.5, S: 0.4, P: 0.6}},
        geometric_levels=["flip", "rotate_10"],
        within_group_knn20={D: 0.80, C: 0.70, S: 0.85},
        label_efficiency={"1": {"dino_features": 0.5, "trained_on_these_labels": 0.3},
                          "10": {"dino_features": 0.7, "trained_on_these_labels": 0.65, "classifier": 0.6}},
        transfer_digits={D: 0.9, S: 0.8}, attention_on_object={D: 0.8, S: 0.6})
    args.update(over)
    return build_headline(**args)


def test_shape_and_targets_from_the_numbers():
    h = example()
    assert set(h) >= {"roles", "knn20", "near_duplicates", "geometric_levels", "within_group_knn20",
                      "label_efficiency_knn20", "transfer_digits_knn", "attention_on_object"}
    assert h["label_efficiency_knn20"]["10"] == {"dino_features": 0.7, "trained_on_these_labels": 0.65}
    assert mean_geometric_r1(h, D) == pytest.approx(0.7) and mean_geometric_r1(h, S) == pytest.approx(0.35)
    met = {t["target"]: t for t in h["targets"]}
    assert met["DINO 20-NN >= 0.86 (full 60k/10k)"]["met"] is True
    assert met["DINO mean geometric R@1 >= supervised + 0.15"]["margin"] == pytest.approx(0.2)
    assert met["DINO mean geometric R@1 >= pixels"]["met"] is True  # 0.7 vs 0.35
    assert met["within-group 20-NN: DINO >= supervised-coarse + 0.05"]["margin"] == pytest.approx(0.05)
    ten = met["10 labels per class: DINO features >= trained on those labels + 0.10"]
    assert ten["met"] is False and ten["margin"] == pytest.approx(-0.05)
    assert met["digits transfer: DINO > supervised (fine)"]["met"] is True


def test_numbers_outside_zero_one_and_unknown_geometric_levels_are_refused():
    with pytest.raises(ValueError, match="not a fraction"):
        example(knn20={D: 86.0})
    with pytest.raises(ValueError, match="geometric level 'crop_0.5'"):
        example(geometric_levels=["crop_0.5"])


def test_a_missing_measurement_leaves_its_target_undecided():
    h = example(transfer_digits={D: 0.9})
    (t,) = [t for t in h["targets"] if t["target"].startswith("digits")]
    assert t["met"] is None
