"""The descriptor choices of DINO's own copy-detection evaluation, for the ViT extractors (the best one is served).

DINO (``eval_copy_detection.py``, Copydays) does not search with the CLS token alone. Three descriptors are
compared here, all from one forward pass of the same network:

- ``cls``: the CLS token after the final norm, L2-normalised (``extractors.embedding.ViTCLSEmbedding``; what was
  served before this comparison).
- ``cls_gem4``: the CLS token concatenated with the GeM-pooled (p = 4) patch tokens of the last layer (after the
  final norm); each part is L2-normalised before the concatenation, so both weigh the same, and the
  concatenation is L2-normalised again (cosine search).
- ``cls_gem4_whitened``: ``cls_gem4`` after PCA whitening learned on training images only (never on the
  queries), then L2-normalised: the best for every ViT, and so what our ViTs serve
  (``extractors.descriptors.CopyDescriptor``, the whitening fitted by ``vsearch fit-whitening``).

GeM (generalised mean, Radenovic et al.): ``(mean_i max(x_i, eps)^p)^(1/p)`` per channel. p = 1 is mean pooling
(of the positive part), p -> infinity approaches max pooling. Like DINO's code, negative activations are clamped
to ``eps`` first (a fractional power of a negative number is undefined).

PCA whitening: centre on the training mean, rotate onto the covariance's eigenvectors and divide each
coordinate by the square root of its eigenvalue, so the training set's covariance becomes the identity; tiny
eigenvalues are floored (relative to the largest) so that noise directions are not blown up without bound.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from extractors.descriptors import GEM_P, PCAWhitening, gem
from extractors.imaging import array_to_model_input
from extractors.registry import get_spec, load_extractor, load_network

CLS = "cls"
CLS_GEM = "cls_gem4"
CLS_GEM_WHITENED = "cls_gem4_whitened"
DESCRIPTORS = (CLS, CLS_GEM, CLS_GEM_WHITENED)
SERVED = "served"  # the one embedding of an extractor that has no descriptor choice (pixels, the CNN)
DESCRIPTOR_DESCRIPTIONS = {
    CLS: "CLS token (served today)",
    CLS_GEM: "CLS + GeM(p=4) of the last layer's patch tokens, each L2-normalised, concatenated",
    CLS_GEM_WHITENED: "CLS + GeM(p=4), then PCA whitening learned on training images, L2-normalised",
}
class ViTDescriptors(nn.Module):
    """``forward(uint8 [B, 3, S, S]) -> {"cls": [B, D], "cls_gem4": [B, 2D]}``, both L2-normalised.

    The input is normalised with the extractor's own mean and std (0..255 scale), as ``EmbeddingModel`` does, so
    ``cls`` equals what ``load_extractor(name)`` returns for the same pixels."""

    def __init__(self, name: str, p: float = GEM_P) -> None:
        super().__init__()
        spec = get_spec(name)
        if spec.family != "vit":
            raise ValueError(f"{name} is not a ViT: it has no patch tokens")
        self.name = name
        self.p = p
        self.vit = load_network(name)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))
        self.eval()

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.vit.forward_features((pixels.float() - self.mean) / self.std)  # after the final norm
        cls = F.normalize(tokens[:, 0], dim=-1, eps=1e-12)
        pooled = F.normalize(gem(tokens[:, 1:], self.p), dim=-1, eps=1e-12)
        return {CLS: cls, CLS_GEM: F.normalize(torch.cat([cls, pooled], dim=1), dim=-1, eps=1e-12)}


class DescriptorEmbedder:
    """Embeds lists of uint8 images for one extractor (the gateway's resize): ``{descriptor: unit-norm [N, D]}``.

    A ViT gives ``cls`` and ``cls_gem4`` from one forward pass (whitening is applied by the caller, or by
    ``with_served_whitening``); anything else gives its served embedding under ``served``."""

    SLOW_INPUT_SIDE = 64  # a larger input (EfficientNet at 224 px) is embedded in small batches

    def __init__(self, name: str) -> None:
        self.name = name
        spec = get_spec(name)
        self.vit = ViTDescriptors(name) if spec.family == "vit" else None
        self.model = None if self.vit is not None else load_extractor(name)
        self.batch_size = 32 if spec.input_size > self.SLOW_INPUT_SIDE else 500
        self.seconds = 0.0
        self.count = 0

    @torch.no_grad()
    def embed(self, images, size: int, progress: Progress | None = None, label: str = "") -> dict[str, torch.Tensor]:
        task = progress.add_task(label or self.name, total=len(images)) if progress else None
        chunks: dict[str, list[torch.Tensor]] = {}
        t0 = time.perf_counter()
        for i in range(0, len(images), self.batch_size):
            batch = images[i:i + self.batch_size]
            x = torch.from_numpy(np.stack([array_to_model_input(im, size) for im in batch]))
            out = self.vit(x) if self.vit is not None else {SERVED: self.model(x)}
            for key, value in out.items():
                chunks.setdefault(key, []).append(value)
            if progress:
                progress.advance(task, len(x))
        self.seconds += time.perf_counter() - t0
        self.count += len(images)
        return {key: torch.cat(parts) for key, parts in chunks.items()}

    def with_served_whitening(self, embedded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``embedded`` plus ``cls_gem4_whitened`` with the whitening the extractor serves, when one is fitted."""
        spec = get_spec(self.name)
        if CLS_GEM not in embedded or spec.whitening is None or not spec.whitening().exists():
            return embedded
        return {**embedded, CLS_GEM_WHITENED: PCAWhitening.load(spec.whitening()).transform(embedded[CLS_GEM])}
