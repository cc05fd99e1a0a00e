"""Attention on the object: every metric piece by hand, then the measurement and the grid in quick mode."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.attention_on_object import (
    attention_on_object,
    background_stats,
    foreground,
    fraction_on_object,
    grid_patch,
    mask_iou,
    mass_mask,
    patch_fractions,
    save_attention_grid,
    shuffled,
)

RANDOM = "random_vit_femto_p7_fmnist"


pytestmark = pytest.mark.usefixtures("one_thread")


def _image_with_top_left_patch_full():
    """A 28 x 28 image: patch 0 (rows 0-6, cols 0-6) all garment, patch 1 4/7 garment, the rest black."""
    im = np.zeros((1, 28, 28), dtype=np.uint8)
    im[0, :7, :7] = 200
    im[0, :7, 7:11] = [1, 1, 1, 5]  # 4 of patch 1's 7 columns: even the faintest non-zero pixel is foreground
    return im


def test_patch_fractions_in_token_order():
    fg = foreground(_image_with_top_left_patch_full())
    frac = patch_fractions(fg, 7)
    assert frac.shape == (1, 16)
    assert frac[0, 0] == 1.0 and frac[0, 1] == pytest.approx(4 / 7) and frac[0, 2:].sum() == 0
    # row-major: the patch below the top-left one is token 4
    fg2 = np.zeros((1, 28, 28), dtype=bool)
    fg2[0, 7:14, :7] = True
    assert patch_fractions(fg2, 7)[0].nonzero()[0].tolist() == [4]
    assert grid_patch(28, 16) == 7 and grid_patch(224, 196) == 16


def test_fraction_on_object_one_hot_and_uniform():
    frac = patch_fractions(foreground(_image_with_top_left_patch_full()), 7)
    on_full, on_bg, on_half = np.eye(16)[[0]], np.eye(16)[[5]], np.eye(16)[[1]]
    assert fraction_on_object(on_full, frac)[0] == 1.0
    assert fraction_on_object(on_bg, frac)[0] == 0.0
    assert fraction_on_object(on_half, frac)[0] == pytest.approx(4 / 7)
    uniform = np.full((1, 16), 0.05)  # not normalised: renormalised over the patches first
    assert fraction_on_object(uniform, frac)[0] == pytest.approx(frac.mean())
    half_half = np.zeros((1, 16))
    half_half[0, [0, 5]] = 0.3
    assert fraction_on_object(half_half, frac)[0] == pytest.approx(0.5)


def test_mask_iou_by_hand():
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    b = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    assert mask_iou(a, b).tolist() == [1.0, 0.0, 1.0]
    c = np.array([[1, 1, 1, 0]], dtype=bool)
    assert mask_iou(a[:1], c)[0] == pytest.approx(2 / 3)


def test_mass_mask_is_the_fewest_patches_holding_60_percent():
    attn = np.array([[0.5, 0.2, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    m = mass_mask(attn)
    assert m[0].tolist() == [True, True, False, False] or m[0].tolist() == [True, False, True, False]
    assert m[1].tolist() == [True, False, False, False]
    assert m[2].sum() == 3  # uniform: 3 of 4 patches to reach 60%


def test_shuffled_keeps_each_rows_values():
    attn = np.array([[0.5, 0.2, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
    s = shuffled(attn)
    assert np.array_equal(np.sort(s, axis=1), np.sort(attn, axis=1))
    assert (mass_mask(s).sum(1) == mass_mask(attn).sum(1)).all()  # the same mask size: a fair chance level


def test_background_stats():
    im = np.array([[0, 0, 3, 200]], dtype=np.uint8)
    assert background_stats(im) == {"pixels_exactly_0": 0.5, "pixels_1_to_5": 0.25, "pixels_above_0": 0.5}


def test_attention_on_object_quick(tmp_path):
    data: dict = {}
    res = attention_on_object([RANDOM, "pixels"], quick=True, data=data)
    r = res[RANDOM]
    assert r["n_images"] == 100 and "skipped" in res["pixels"]
    for key in ("fraction_on_object", "iou_mass60", "iou_mass60_shuffled", "uniform_baseline", "mass_on_patches"):
        assert 0.0 <= r[key] <= 1.0
    assert len(r["per_head_fraction_on_object"]) == 4 and 1 <= r["mass60_patches"] <= 16
    # a random network attends almost uniformly: close to the uniform baseline
    assert abs(r["fraction_on_object"] - r["uniform_baseline"]) < 0.1
    bg = res["_meta"]["background"]
    assert bg["pixels_exactly_0"] + bg["pixels_above_0"] == pytest.approx(1.0)
    path = save_attention_grid(tmp_path / "grid.png", [RANDOM], n=2, data=data)
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
