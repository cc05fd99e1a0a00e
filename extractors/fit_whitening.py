"""``vsearch fit-whitening``: learns the PCA whitening of a ViT's CLS + GeM descriptor on Fashion-MNIST training
images (a seeded sample, labels never read) and saves it beside the model's weights, where the registry loads it.
Refit after retraining: the whitening belongs to one set of weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from extractors.datasets import load_fashion_mnist
from extractors.descriptors import CopyDescriptor, PCAWhitening
from extractors.embedding import EmbeddingModel
from extractors.registry import REGISTRY, get_spec, load_network
from extractors.training import dataset_to_uint8

DEFAULT_IMAGES = 20000  # training images the whitening is learned on (DINO's copy-detection eval uses 20k too)


def whitened_models() -> list[str]:
    return [name for name, spec in REGISTRY.items() if spec.whitening is not None]


@torch.no_grad()
def fit_whitening(name: str, n_images: int = DEFAULT_IMAGES, seed: int = 0, batch_size: int = 1000) -> Path:
    spec = get_spec(name)
    if spec.whitening is None:
        raise ValueError(f"{name} serves its CLS token: it has no whitening to fit")
    train = load_fashion_mnist("train")
    idx = np.sort(np.random.default_rng(seed).choice(len(train), size=min(n_images, len(train)), replace=False))
    unwhitened = EmbeddingModel(CopyDescriptor(load_network(name)), spec.mean, spec.std).eval()
    x = dataset_to_uint8(train.subset(idx))
    feats = torch.cat([unwhitened(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    weights = spec.weights()
    return PCAWhitening.fit(feats).save(spec.whitening(), fit_on=f"Fashion-MNIST train, {len(idx)} images, seed {seed}",
                                        weights=str(weights.name) if weights else "seeded initialisation")
