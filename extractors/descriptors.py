"""The copy-detection descriptor our ViTs serve: DINO's own choice (``eval_copy_detection.py``), measured best
for every ViT by the graded near-duplicate protocol (reports/comparison/representations.md).

``CopyDescriptor``: the CLS token concatenated with the GeM-pooled (p = 4) patch tokens of the last layer (after
the final norm), each part L2-normalised so both weigh the same, the concatenation L2-normalised, then PCA
whitening learned on training images only (never on queries); ``EmbeddingModel`` normalises the result.

GeM (generalised mean, Radenovic et al.): ``(mean_i max(x_i, eps)^p)^(1/p)`` per channel; p = 1 is mean pooling of
the positive part, p -> infinity approaches max pooling. Negative activations are clamped to ``eps`` first, as in
DINO's code (a fractional power of a negative number is undefined).

PCA whitening: centre on the training mean, rotate onto the covariance's eigenvectors and divide each coordinate
by the square root of its eigenvalue, so the training set's covariance becomes the identity; tiny eigenvalues are
floored (relative to the largest) so that noise directions are not blown up without bound."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from extractors.vit import VisionTransformer

GEM_P = 4.0


def gem(tokens: torch.Tensor, p: float = GEM_P, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the token axis: [B, N, D] -> [B, D] (negatives clamped to ``eps``)."""
    return tokens.clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p)


@dataclass
class PCAWhitening:
    """``transform(x) = normalize((x - mean) @ projection)``; ``fit`` learns it from a set of training vectors."""

    mean: torch.Tensor  # [D]
    projection: torch.Tensor  # [D, D]: eigenvectors scaled by 1/sqrt(eigenvalue), largest first
    eigenvalues: torch.Tensor  # [D], largest first (before flooring)

    @classmethod
    def fit(cls, x: torch.Tensor, rel_floor: float = 1e-6) -> PCAWhitening:
        """Learns the whitening of ``x`` [N, D] (N > 1). Eigenvalues below ``rel_floor`` x the largest are
        raised to it, so a degenerate direction is scaled up by at most 1/sqrt(rel_floor)."""
        if x.ndim != 2 or len(x) < 2:
            raise ValueError("PCAWhitening.fit needs a [N, D] matrix with N >= 2")
        x64 = x.double()
        mean = x64.mean(0)
        centred = x64 - mean
        cov = centred.T @ centred / len(x64)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        floored = eigenvalues.clamp(min=float(eigenvalues[0].clamp(min=0)) * rel_floor + 1e-30)
        projection = eigenvectors / floored.sqrt()
        return cls(mean.float(), projection.float(), eigenvalues.float())

    def transform(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        out = (x.float() - self.mean) @ self.projection
        return F.normalize(out, dim=-1, eps=1e-12) if normalize else out

    def save(self, path: Path, **info) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"mean": self.mean, "projection": self.projection, "eigenvalues": self.eigenvalues, **info}, path)
        return path

    @classmethod
    def load(cls, path: Path) -> PCAWhitening:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["mean"], state["projection"], state["eigenvalues"])


class CopyDescriptor(nn.Module):
    """A ViT's CLS + GeM(p) patch descriptor, whitened when a whitening is given (see the module doc)."""

    def __init__(self, vit: VisionTransformer, whitening: PCAWhitening | None = None, p: float = GEM_P) -> None:
        super().__init__()
        self.vit = vit
        self.p = p
        self.whitened = whitening is not None
        if whitening is not None:
            self.register_buffer("white_mean", whitening.mean.clone())
            self.register_buffer("white_projection", whitening.projection.clone())

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 1 + N, D] tokens after the final norm -> [B, 2D] (not normalised: EmbeddingModel does that)."""
        cls = F.normalize(tokens[:, 0], dim=-1, eps=1e-12)
        pooled = F.normalize(gem(tokens[:, 1:], self.p), dim=-1, eps=1e-12)
        d = F.normalize(torch.cat([cls, pooled], dim=1), dim=-1, eps=1e-12)
        return (d - self.white_mean) @ self.white_projection if self.whitened else d

    def patch_shares(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each patch's exact additive share of ``from_tokens(tokens)``: [B, N, out dim]. What the shares do not
        sum to is the non-spatial rest (the CLS part, minus the whitening mean).

        GeM's p-th power mean splits over the patches: ``g = sum_i g * x_i^p / sum_j x_j^p`` per channel. The two
        normalisations divide by norms of the whole (scalars per image) and the whitening is affine, so each
        patch's share of ``g`` maps through them linearly (the mean is subtracted once, in the rest)."""
        cls = F.normalize(tokens[:, 0], dim=-1, eps=1e-12)
        powered = tokens[:, 1:].clamp(min=1e-6).pow(self.p)  # as in gem()
        pooled = gem(tokens[:, 1:], self.p)
        pooled_norm = pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        concat_norm = torch.cat([cls, pooled / pooled_norm], dim=1).norm(dim=-1, keepdim=True).clamp(min=1e-12)
        shares = pooled.unsqueeze(1) * powered / powered.sum(1, keepdim=True)  # [B, N, D], sums to pooled
        shares = shares / (pooled_norm * concat_norm).unsqueeze(1)
        parts = torch.cat([torch.zeros_like(shares), shares], dim=-1)  # the CLS half has no spatial part
        return parts @ self.white_projection if self.whitened else parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_tokens(self.vit.forward_features(x))
