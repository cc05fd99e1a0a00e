"""Why a hit matched, as the served graph can say it: each region's exact additive share of the embedding.

The embedding is ``e = raw / |raw|``. Where ``raw`` is a sum over regions plus a rest that no region carries,
``raw = sum_r part_r + rest``, the graph outputs ``patch_contributions[r] = part_r / |raw|`` (the norm is a scalar
of the whole image), so for any stored unit vector ``v``: ``cos(e, v) = sum_r contributions[r] @ v + rest @ v``.
The gateway turns that into a heatmap with one matrix product (numpy only; no torch at serving time).

- The whitened CLS + GeM ViT descriptor (``extractors.descriptors.CopyDescriptor``): the regions are the patches;
  GeM's p-th power mean splits exactly over them (``CopyDescriptor.patch_shares``). The CLS half and the whitening
  mean are the rest.
- EfficientNet: the regions are the 7x7 cells of the last feature map; global mean pooling makes the cells sum
  to the whole (no rest).
- A ViT serving its bare CLS token has no spatial part: it gets no such output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from extractors.descriptors import CopyDescriptor
from extractors.embedding import EmbeddingModel, ViTEmbeddingWithAttention
from extractors.registry import FeatureHead, get_spec, load_extractor
from extractors.tensor_names import ATTENTION_OUTPUT, EMBEDDING_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT


def has_contributions(name: str) -> bool:
    """Whether the extractor's embedding splits over regions (a CNN, or a ViT serving the whitened descriptor)."""
    spec = get_spec(name)
    return spec.family == "cnn" or (spec.family == "vit" and spec.whitening is not None)


def served_outputs(name: str) -> list[str]:
    """The outputs of the graph Triton serves for ``name``, the embedding first (plain searches ask only for it)."""
    spec = get_spec(name)
    outputs = [EMBEDDING_OUTPUT]
    if spec.has_attention:
        outputs.append(ATTENTION_OUTPUT)
    if has_contributions(name):
        outputs.append(PATCH_CONTRIBUTIONS_OUTPUT)
    return outputs


def _per_unit_embedding(raw: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    norm = raw.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # F.normalize's eps
    return F.normalize(raw, dim=-1, eps=1e-12), parts / norm.unsqueeze(1)


class ViTWithContributions(ViTEmbeddingWithAttention):
    """``pixels -> (embedding, attention, patch_contributions)`` for a ``CopyDescriptor`` backbone."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        descriptor: CopyDescriptor = self.backbone
        tokens, attention = self.tokens_and_attention(pixels)
        embedding, parts = _per_unit_embedding(descriptor.from_tokens(tokens), descriptor.patch_shares(tokens))
        return embedding, attention, parts


class CNNWithContributions(EmbeddingModel):
    """``pixels -> (embedding, patch_contributions)`` for a ``FeatureHead`` over a CNN whose features are the global
    mean of its last feature map."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        fmap = self.backbone.net.forward_feature_map(self.preprocess(pixels))  # [B, C, H, W]
        cells = fmap.flatten(2).transpose(1, 2) / (fmap.shape[2] * fmap.shape[3])  # [B, H*W, C], sums to the mean
        return _per_unit_embedding(cells.sum(1), cells)


def load_served_graph(name: str, weights_path=None) -> nn.Module:
    """The module export traces for ``name``: its outputs are ``served_outputs(name)``, in that order."""
    spec = get_spec(name)
    if spec.family == "vit":
        model = load_extractor(name, weights_path, with_attention=True)
        if has_contributions(name):
            return ViTWithContributions(model.backbone, spec.mean, spec.std).eval()
        return model
    model = load_extractor(name, weights_path)
    if has_contributions(name):
        assert isinstance(model.backbone, FeatureHead)
        return CNNWithContributions(model.backbone, spec.mean, spec.std).eval()
    return model
