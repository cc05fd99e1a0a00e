"""The embedder interface the gateway depends on; runtimes (Triton, in-process ONNX) sit behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelDescription:
    name: str
    dim: int
    input_size: int
    # Regions of the served graph's patch_contributions output (16 for a 4x4 ViT, 49 for 7x7 CNN cells); 0: none.
    regions: int = 0
    max_batch_size: int = 0  # the most images one request may carry (Triton's max_batch_size); 0: no limit


class EmbedderUnavailable(RuntimeError):
    """The runtime can't be reached (maps to gRPC UNAVAILABLE)."""


class EmbedderError(RuntimeError):
    """The runtime refused the request (unknown model, bad input): maps to INVALID_ARGUMENT / INTERNAL."""


class Embedder(Protocol):
    async def embed(self, model: str, pixels: np.ndarray) -> np.ndarray:
        """uint8 [B, 3, S, S] -> float32 [B, D] with unit L2 norm."""
        ...

    async def embed_with_contributions(self, model: str, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, 3, S, S] -> (embeddings [B, D], each region's share of them [B, regions, D]); see
        ``extractors.contributions``. Only for a model whose description has ``regions``."""
        ...

    async def describe(self, model: str) -> ModelDescription: ...

    async def models(self) -> list[ModelDescription]: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
