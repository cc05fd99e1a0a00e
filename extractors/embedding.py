"""The embedding network as it is exported and served: uint8 pixels in, L2-normalised embedding out.

Keeping the float conversion and normalisation inside the graph means the gateway only decodes and
resizes (uint8 on the wire: 4x fewer bytes than float32), and no client can get the statistics wrong."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from extractors.vit import VisionTransformer


class ViTCLSEmbedding(nn.Module):
    """The CLS token after the final norm: DINO's embedding. A classification ``head`` is skipped."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_tokens(self.vit.forward_features(x))


class GreyPixels(nn.Module):
    """The raw-pixel floor as a network: the grey image (the mean of the channels), flattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1).flatten(1)


class EmbeddingModel(nn.Module):
    """``forward(uint8 [B, 3, H, W]) -> float32 [B, D]`` with unit L2 norm.

    ``mean`` and ``std`` are in the 0..255 pixel scale, so every extractor shares one formula."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(self.preprocess(pixels)), dim=-1, eps=1e-12)


class ViTEmbeddingWithAttention(EmbeddingModel):
    """Also returns the last block's CLS-to-patch self-attention, [B, heads, N] (for explanations). The backbone is
    a ``ViTCLSEmbedding`` or an ``extractors.descriptors.CopyDescriptor``: both turn the final tokens into the
    embedding with ``from_tokens``."""

    def tokens_and_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final tokens after the norm, [B, 1 + N, D], and the last block's CLS-to-patch attention."""
        vit: VisionTransformer = self.backbone.vit
        x = vit.prepare_tokens(self.preprocess(pixels))
        for blk in vit.blocks[:-1]:
            x = blk(x)
        last = vit.blocks[-1]
        attn = last(x, return_attention=True)
        x = last(x)
        return vit.norm(x), attn[:, :, 0, 1:]

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, attention = self.tokens_and_attention(pixels)
        return F.normalize(self.backbone.from_tokens(tokens), dim=-1, eps=1e-12), attention
