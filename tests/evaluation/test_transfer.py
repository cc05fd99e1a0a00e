"""Transfer to scikit-learn's digits: the preparation and the split by hand, then the measurement in quick mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.protocol import to_square_uint8
from evaluation.transfer import digits_split, digits_uint8, to_uint8, transfer_digits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_to_uint8_maps_0_to_16_onto_0_to_255():
    x = to_uint8(np.array([[0.0, 8.0, 16.0, 4.0]]))
    assert x.dtype == np.uint8
    assert x.tolist() == [[0, 128, 255, 64]]  # 8 * 255 / 16 = 127.5 rounds to even: 128; 4 -> 63.75 -> 64


def test_digits_shape_range_and_split():
    images, labels = digits_uint8()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    db, q = digits_split(labels)
    assert len(db) + len(q) == 1797 and not set(db) & set(q)
    assert abs(len(db) - len(q)) <= 1
    assert np.array_equal(db, digits_split(labels)[0])  # fixed
    per_class_db, per_class_q = np.bincount(labels[db]), np.bincount(labels[q])
    assert np.abs(per_class_db - per_class_q).max() <= 1  # stratified
    # the extractors' resize: 8 -> 28 px, grey replicated to RGB
    x = to_square_uint8(images[:2], 28)
    assert tuple(x.shape) == (2, 3, 28, 28) and torch.equal(x[:, 0], x[:, 2])


def test_transfer_quick():
    res = transfer_digits(["pixels", "random_vit_femto_p7_fmnist"], quick=True)
    assert res["_meta"]["n_db"] == res["_meta"]["n_queries"] == 300
    assert 0.85 < res["pixels"] <= 1.0  # raw pixels are strong on clean digits
    assert 0.1 < res["random_vit_femto_p7_fmnist"] <= 1.0  # above chance
    vit = res["_by_descriptor"]["random_vit_femto_p7_fmnist"]
    assert len(vit["by_descriptor"]) == 3 and res["random_vit_femto_p7_fmnist"] == max(vit["by_descriptor"].values())
    assert vit["by_descriptor"][vit["descriptor"]] == res["random_vit_femto_p7_fmnist"]
