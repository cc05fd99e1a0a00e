"""Label efficiency: with 1, 10 or 100 labelled images per class, frozen DINO features vs a network trained on them.

For each n: the labelled images are exactly ``extractors.training.labelled_subset(train_labels, n, seed=0)`` (the
indices the ``supervised_labels{n}`` presets trained on: 10 n images). Queries = the 10k test images.

- ``dino_features``: weighted k-NN (DINO's protocol, T = 0.07, k = min(20, 10 n)) on the frozen DINO extractor's
  embeddings, database = the 10 n labelled images with their labels. DINO itself saw the 60k images, unlabelled.
- ``trained_on_these_labels``: the same k-NN, same database and queries, on the embeddings of
  ``supervised_labels{n}_vit_femto_p7_fmnist`` (the same ViT trained with cross-entropy on those 10 n labels only).
- Both are measured with each of the ViT's three descriptors (``semantic_bias.knn_by_descriptor``) and take their
  best (``<side>_descriptor``; every number in ``<side>_by_descriptor``): the served, whitened descriptor is made
  for a dense database, and with 10 to 1,000 references it costs both sides most (see ``semantic_bias``).
- ``trained_classifier``: that network's own classification head on the test set.
- ``pixels``: the same k-NN on raw pixels (the floor), unless ``references`` says otherwise.

A model whose weights are not there yet is reported as ``{"skipped": why}`` in place of its accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from evaluation.protocol import to_square_uint8
from evaluation.semantic_bias import (
    descriptor_embeddings,
    knn_by_descriptor,
    load_data,
    weights_info,
    weights_missing,
)
from extractors.datasets import FASHION_MNIST_CLASSES
from extractors.registry import PIXELS, get_spec, load_network
from extractors.training import labelled_subset

NS = (1, 10, 100)
SEED = 0  # the presets' seed: the same labelled images the few-label networks trained on
FEATURES = "dino_vit_femto_p7_fmnist"
TRAINED = "supervised_labels{n}_vit_femto_p7_fmnist"
QUICK_QUERIES = 1000


def labelled_database(train_labels: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """The indices of the labelled images for ``n`` per class (what the few-label runs trained on)."""
    return labelled_subset(np.asarray(train_labels), n, seed)


@torch.no_grad()
def classifier_accuracy(name: str, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float | None:
    """Test accuracy of network ``name``'s own classification head (None when it has no 10-way head)."""
    spec = get_spec(name)
    net = load_network(name)
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Linear) or head.out_features != len(FASHION_MNIST_CLASSES):
        return None
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    preds = []
    for i in range(0, len(images), batch_size):
        x = (to_square_uint8(images[i:i + batch_size], spec.input_size).float() - mean) / std
        preds.append(net(x).argmax(1))
    return float((torch.cat(preds).numpy() == np.asarray(labels)).mean())


def label_efficiency(quick: bool = False, ns=NS, features: str = FEATURES, trained: str | None = TRAINED,
                     references: tuple[str, ...] = (PIXELS,), data: dict | None = None) -> dict:
    """``{"1": {"dino_features", "trained_on_these_labels", "<side>_descriptor", "<side>_by_descriptor",
    "trained_classifier", "pixels", "n_db", "k", "n_queries", "trained_model"}, "10": {...}, "100": {...}}``.
    ``features`` is the frozen extractor (DINO),
    ``trained`` the name template of the networks trained on the n-per-class labels (``{n}`` is filled in; None:
    the frozen features only).
    ``quick``: the first 1,000 test images as queries."""
    data = load_data(data)
    train, test = data["train"], data["test"]
    q_idx = np.arange(QUICK_QUERIES if quick else len(test))
    q_images, q_y = test.images[q_idx], test.labels[q_idx]
    query_cache: dict[str, dict[str, torch.Tensor]] = {}

    def knn_with(name: str, db_idx: np.ndarray) -> dict:
        note = weights_missing(name)
        if note:
            return {"skipped": note}
        if name not in query_cache:
            query_cache[name] = descriptor_embeddings(name, q_images)
        db = descriptor_embeddings(name, train.images[db_idx])
        return knn_by_descriptor(db, train.labels[db_idx], query_cache[name], q_y, k=min(20, len(db_idx)))

    out: dict = {}
    for n in ns:
        t0 = time.perf_counter()
        db_idx = labelled_database(train.labels, n)
        row: dict = {"n_db": len(db_idx), "k": min(20, len(db_idx)), "n_queries": len(q_idx)}
        sides = {"dino_features": features}
        if trained is not None:
            sides["trained_on_these_labels"] = trained.format(n=n)
        for side, name in sides.items():
            r = knn_with(name, db_idx)
            row[side] = r if "skipped" in r else r["accuracy"]
            if "skipped" not in r:
                row[f"{side}_descriptor"], row[f"{side}_by_descriptor"] = r["descriptor"], r["by_descriptor"]
        if trained is not None and not weights_missing(sides["trained_on_these_labels"]):
            row["trained_classifier"] = classifier_accuracy(sides["trained_on_these_labels"], q_images, q_y)
            row["trained_model"] = {"name": sides["trained_on_these_labels"],
                                    **weights_info(sides["trained_on_these_labels"])}
        for ref in references:
            r = knn_with(ref, db_idx)
            row[ref] = r if "skipped" in r else r["accuracy"]
        row["features"] = features
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        out[str(n)] = row
    return out
