"""The demo's Fashion-MNIST query edit comes from the graded protocol's measurements."""

from __future__ import annotations

import json

from clients.demo import FALLBACK_LEVEL, demo_level


def test_the_strongest_edit_still_found_at_the_threshold_is_picked(tmp_path):
    path = tmp_path / "near_duplicates.json"
    levels = {"identity": 1.0, "strong": 0.95, "jpeg_20": 0.945, "rotate_5": 0.42, "contrast_0.8": 0.985}
    path.write_text(json.dumps({"fashion_mnist": {"results": {"m": {"levels": {
        k: {"recall_at_1": v} for k, v in levels.items()}}}}}))
    assert demo_level("m", path).name == "jpeg_20"  # 0.945: the lowest R@1 still >= 0.9 (identity, strong excluded)
    assert demo_level("other", path).name == FALLBACK_LEVEL
    assert demo_level("m", tmp_path / "missing.json").name == FALLBACK_LEVEL
