"""Embedding throughput: torch eager vs ONNX Runtime (options tuned by measurement) vs Triton, per model and batch size,
against this machine's measured float32 matmul peak, in interleaved rounds so a background job on this shared machine
slows all of them alike."""

from benchmarks.embedding.benchmark import BATCHES, METHODS, MODELS, NAME, QUICK_MODELS, run
from benchmarks.embedding.section import markdown, targets

__all__ = ["BATCHES", "METHODS", "MODELS", "NAME", "QUICK_MODELS", "markdown", "run", "targets"]
