"""Embedders: uint8 image batches -> unit-norm float32 embeddings. Triton is what the gateway uses."""

from server.embedder.base import Embedder, EmbedderError, EmbedderUnavailable, ModelDescription

__all__ = ["Embedder", "EmbedderError", "EmbedderUnavailable", "ModelDescription"]
