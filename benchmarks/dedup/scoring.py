"""Precision and recall of duplicate groups against the injected copies, counted over pairs.

A group of n items stands for its n(n-1)/2 pairs (what a user deleting "all but one" acts on). A pair is true when
both items are of one family (an original and its copies). Pairs of two originals are unlabelled (Fashion-MNIST
has its own near-identical items): counted apart, outside precision. Counted from group sizes, never by listing
pairs, so a group of 10,000 costs nothing."""

from __future__ import annotations

import numpy as np

from benchmarks.dedup.collection import Collection


def _pairs(n: np.ndarray) -> int:
    n = np.asarray(n, dtype=np.int64)
    return int(np.sum(n * (n - 1) // 2))


def labels_from_groups(collection: Collection, groups: list[list[str]]) -> np.ndarray:
    """A group label per item (items in no group get a label of their own)."""
    index = {i: k for k, i in enumerate(collection.ids)}
    labels = np.arange(len(collection.ids)) + len(groups)
    for g, ids in enumerate(groups):
        labels[[index[i] for i in ids if i in index]] = g
    return labels


def score(collection: Collection, labels: np.ndarray) -> dict:
    labels = np.unique(np.asarray(labels), return_inverse=True)[1]
    copy = collection.is_copy
    sizes = np.bincount(labels)
    originals = np.bincount(labels, weights=~copy).astype(np.int64)
    labelled = _pairs(sizes) - _pairs(originals)
    joint = labels.astype(np.int64) * (collection.family.max() + 1) + collection.family
    tp = _pairs(np.unique(joint, return_counts=True)[1])
    true_pairs = _pairs(np.bincount(collection.family))
    precision = tp / labelled if labelled else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    same = labels[copy] == labels[collection.family[copy]]
    levels = np.array(collection.level)[copy]
    per_level = {lv: round(float(np.mean(same[levels == lv])), 4) for lv in dict.fromkeys(levels.tolist())}
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_positive_pairs": tp, "labelled_pairs": labelled, "unlabelled_pairs": _pairs(originals),
            "groups": int(np.sum(sizes > 1)), "largest_group": int(sizes.max()), "copy_recall_by_level": per_level}
