"""Weighted k-NN classification on frozen embeddings: DINO's evaluation protocol (Wu et al. 2018, T = 0.07)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised ``model(images)`` in batches. ``images`` are float tensors ready for the model."""
    model.eval()
    out = [F.normalize(model(images[i:i + batch_size]).float(), dim=1) for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 k: int = 20, T: float = 0.07, num_classes: int | None = None, chunk: int = 1000) -> torch.Tensor:
    """Predicted labels of ``test_features``: votes of the k most cosine-similar training rows,
    each weighted by exp(similarity / T). Features must be L2-normalised."""
    num_classes = num_classes or int(train_labels.max()) + 1
    preds = []
    for i in range(0, len(test_features), chunk):
        sims = test_features[i:i + chunk] @ train_features.T
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / T).exp()
        votes = torch.zeros(len(top_idx), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 20, T: float = 0.07) -> float:
    train_labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    test_labels = torch.as_tensor(np.asarray(test_labels), dtype=torch.long)
    preds = knn_classify(torch.as_tensor(train_features), train_labels, torch.as_tensor(test_features), k=k, T=T)
    return float((preds == test_labels).float().mean())
