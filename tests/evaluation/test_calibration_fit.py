"""The threshold rule of evaluation/calibration.py on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.calibration import Pairs, fit, fit_threshold, precision_recall


def test_lowest_score_before_precision_drops():
    # t=0.9: TPR 1/3, FPR 0 -> 1.0; t=0.8: 2/3, 0 -> 1.0; t=0.7: TPR 1, FPR 1/2 -> 2/3 < 0.99: stop at 0.8
    f = fit_threshold(np.array([0.9, 0.8, 0.7]), np.array([0.75, 0.5]))
    assert f.threshold == pytest.approx(0.8)
    assert f.precision == pytest.approx(1.0)
    assert f.recall == pytest.approx(2 / 3)


def test_precision_must_hold_at_every_higher_threshold():
    # A negative at 0.95 makes t=0.9 fail (TPR 1/4, FPR 1/2 -> 1/3), though at t=0.6 precision recovers to
    # TPR 1 / (1 + 1/2) = 2/3 only: the rule never skips past a failing threshold. Target 0.5: 0.96 passes (1.0),
    # 0.9 -> (2/4) / (2/4 + 1/2) = 0.5 passes, 0.8 -> (3/4) / (3/4 + 1/2) = 0.6 passes, 0.6 -> 1 / 1.5 = 0.667.
    pos, neg = np.array([0.96, 0.9, 0.8, 0.6]), np.array([0.95, 0.1])
    assert fit_threshold(pos, neg, target=0.99).threshold == pytest.approx(0.96)
    strict = fit_threshold(pos, neg, target=0.99)
    assert (strict.precision, strict.recall) == (pytest.approx(1.0), pytest.approx(0.25))
    loose = fit_threshold(pos, neg, target=0.5)
    assert loose.threshold == pytest.approx(0.6) and loose.recall == pytest.approx(1.0)
    assert loose.precision == pytest.approx(2 / 3)


def test_one_to_one_weighting_ignores_how_many_negatives_were_drawn():
    pos = np.array([0.9, 0.85, 0.8, 0.7])
    few, many = np.array([0.75, 0.2]), np.repeat(np.array([0.75, 0.2]), 50)
    assert fit_threshold(pos, few, 0.6) == fit_threshold(pos, many, 0.6)


def test_no_threshold_when_a_negative_outscores_every_positive():
    f = fit_threshold(np.array([0.5, 0.4]), np.array([0.9]))
    assert f.recall == 0.0 and f.threshold > 0.9


def test_precision_recall_curve_matches_the_rule():
    pos, neg = np.array([0.9, 0.8, 0.7]), np.array([0.75, 0.5])
    p, r = precision_recall(np.sort(pos), np.sort(neg), np.array([0.8, 0.7]))
    assert p.tolist() == pytest.approx([1.0, 2 / 3]) and r.tolist() == pytest.approx([2 / 3, 1.0])


def test_exact_is_never_below_near_duplicate():
    # Target 0.7. Near: 0.95, 0.9 pass (no negative above); at 0.75 TPR 3/10, FPR 1/4 -> 0.545 fails: NEAR >= 0.9.
    # Exact alone: 0.75 -> TPR 1, FPR 1/4 -> 0.8 passes, below NEAR: EXACT is raised to 0.9 (TPR 1/2, FPR 0).
    exact = np.array([0.95, 0.75])
    near = np.array([0.95, 0.9, 0.75] + [0.3] * 7)
    neg = np.array([0.8, 0.5, 0.1, 0.1])
    c = fit("m", Pairs(exact, near, neg, np.array([]), {}, {}), target=0.7)
    assert c.near_duplicate.min_score == pytest.approx(0.9, abs=1e-6)
    assert c.exact.min_score == pytest.approx(0.9, abs=1e-6)
    assert (c.exact.precision, c.exact.recall) == (pytest.approx(1.0), pytest.approx(0.5))
    assert c.verdict(0.95) == "EXACT" and c.verdict(0.5) == "SIMILAR"


def test_edited_copies_are_negatives_of_exact():
    # Exact positives 1.0, 0.97; an edited copy at 0.98 makes 0.97 fail (TPR 1, FPR 1/3 -> 0.75): EXACT >= 1.0.
    exact, edited, neg = np.array([1.0, 0.97]), np.array([0.98, 0.6]), np.array([0.5])
    c = fit("m", Pairs(exact, np.concatenate([exact, edited]), neg, edited, {}, {}), target=0.99)
    assert c.exact.min_score == pytest.approx(1.0) and c.exact.recall == pytest.approx(0.5)
    assert c.near_duplicate.min_score == pytest.approx(0.6, abs=1e-6)


def test_calibrate_writes_a_calibration_the_gateway_reads_and_its_report(tmp_path):
    """The whole fit on a small Fashion-MNIST set with the committed DINO ViT (seconds)."""
    from evaluation.calibration import calibrate
    from server.calibration import load
    from tests.fixtures.models import VIT_MODEL

    out = tmp_path / "calibration.json"
    c, pairs = calibrate(VIT_MODEL, "fashion_mnist", out=out, report_dir=tmp_path / "report", n_db=300,
                         n_originals=20, n_distinct=20)
    assert load(out, VIT_MODEL) == c
    assert -1 <= c.near_duplicate.min_score <= c.exact.min_score <= 1
    assert len(pairs.exact) == 4 * 20 and len(pairs.near) == len(pairs.per_level) * 20
    assert np.all(pairs.per_level["identity"] > 0.999)  # a copy's original is itself at the identity level
    assert c.verdict(1.0) == "EXACT"
    png = tmp_path / "report" / f"{VIT_MODEL}.png"
    assert 5_000 < png.stat().st_size < 300_000
    report = (tmp_path / "report" / "README.md").read_text()
    assert f"## {VIT_MODEL}" in report and f"{c.exact.min_score:.4f}" in report
