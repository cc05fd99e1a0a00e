"""Transfer to a data set nobody trained on: scikit-learn's 1,797 real 8x8 handwritten digits.

The digits (values 0..16, white strokes on black, like Fashion-MNIST's garments) are scaled to uint8 0..255
(``x * 255 / 16``) and reach every extractor through the gateway's resize (``extractors.imaging``: bilinear,
grey replicated to RGB): 8 -> 28 px for the femto ViTs and the pixel floor, 8 -> 224 px for EfficientNet.
One fixed stratified half/half split (``train_test_split(test_size=0.5, stratify=y, random_state=0)``): the
first half is the k-NN database, the second the queries; the score is DINO's weighted 20-NN accuracy, each ViT
at its best of its three descriptors (``semantic_bias.knn_by_descriptor``; all of them in ``"_by_descriptor"``).
"""

from __future__ import annotations

import time

import numpy as np

from evaluation.semantic_bias import descriptor_embeddings, knn_by_descriptor, measurable
from extractors.registry import PIXELS

DEFAULT_EXTRACTORS = [PIXELS, "random_vit_femto_p7_fmnist", "dino_vit_femto_p7_fmnist",
                      "supervised_vit_femto_p7_fmnist", "supervised_coarse_vit_femto_p7_fmnist",
                      "efficientnet_lite0_imagenet"]
SPLIT_SEED = 0
QUICK_PER_SIDE = 300  # quick mode: the first 300 database and 300 query digits of the fixed split


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 [1797, 8, 8] (0..16 -> 0..255) and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return to_uint8(d.images), d.target.astype(np.int64)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Digit intensities 0..16 -> uint8 0..255 (``x * 255 / 16``, rounded)."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float64) * 255.0 / 16.0), 0, 255).astype(np.uint8)


def digits_split(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified half/half split: (database indices, query indices)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    db, q = train_test_split(idx, test_size=0.5, stratify=labels, random_state=seed)
    return np.asarray(db), np.asarray(q)


def transfer_digits(extractors: list[str] | None = None, quick: bool = False) -> dict:
    """``{name: 20-NN accuracy}`` on the digits split (``{"skipped": why}`` for missing weights), plus
    ``"_meta"``: the split sizes and each extractor's wall time, and ``"_by_descriptor"``: ``{name: {"descriptor":
    the one used, "by_descriptor": {descriptor: accuracy}}}``."""
    images, labels = digits_uint8()
    db_idx, q_idx = digits_split(labels)
    if quick:
        db_idx, q_idx = db_idx[:QUICK_PER_SIDE], q_idx[:QUICK_PER_SIDE]
    out: dict = {}
    meta: dict = {"n_db": len(db_idx), "n_queries": len(q_idx), "split_seed": SPLIT_SEED, "wall_s": {}}
    by_descriptor: dict = {}
    for name in measurable(extractors or DEFAULT_EXTRACTORS, out):
        t0 = time.perf_counter()
        r = knn_by_descriptor(descriptor_embeddings(name, images[db_idx]), labels[db_idx],
                              descriptor_embeddings(name, images[q_idx]), labels[q_idx])
        out[name] = r["accuracy"]
        by_descriptor[name] = {"descriptor": r["descriptor"], "by_descriptor": r["by_descriptor"]}
        meta["wall_s"][name] = round(time.perf_counter() - t0, 1)
    out["_meta"] = meta
    out["_by_descriptor"] = by_descriptor
    return out
