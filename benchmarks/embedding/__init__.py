"""Embedding throughput: torch eager vs ONNX Runtime (tuned) vs Triton, per model and batch size, against this machine's
measured single-precision matmul peak.

Three models: a ViT-S/16 at 224x224 (the production shape; random weights, registered here under ``HEADLINE``),
our Fashion-MNIST ViT and EfficientNet-Lite0. Every path computes the same thing: uint8 pixels in, unit-norm
embedding out.

- torch: the registry's ``EmbeddingModel`` in eager mode (``inference_mode``, ``torch.set_num_threads(cores)``).
- ONNX Runtime: the graph ``export_repository`` writes for Triton, in a session built by the served model's own code
  (``export/onnx_cpu.py``: embedding output only, attention fused). The session options are chosen here by
  measurement at the target batch (fused attention or not, thread spinning or not, then IO binding or not) and
  recorded; the cost of building a session from ``model.onnx`` vs from a cached optimised model is recorded too.
- Triton: the real ``tritonserver`` serving that repository (cpu target, python backend running ONNX Runtime); one
  gRPC request carries the whole batch.

The three are timed in interleaved rounds (one call of each per round, the order rotating), so a background job on
this shared machine slows all of them alike; images/s come from the fastest call of each (the 0th percentile: the
least disturbed), p50 is recorded next to it. FLOPs per image are counted by ``torch.utils.flop_counter`` (one
multiply-add = 2 FLOPs; matmuls, convolutions and attention only). The peak is numpy's float32 matmul (sgemm) on
large square matrices, best of several, measured in the same run.

The package: ``plan`` (models, batches, target), ``timing`` (peak, interleaved rounds, FLOPs),
``onnxruntime_options`` (the tuned session), ``profile`` (per-operator time), ``benchmark`` (the run) and
``section`` (BENCHMARKS.md).
"""

from benchmarks.embedding.benchmark import run
from benchmarks.embedding.plan import BATCHES, METHODS, MODELS, NAME, QUICK_MODELS
from benchmarks.embedding.section import markdown, targets, why_not

__all__ = ["BATCHES", "METHODS", "MODELS", "NAME", "QUICK_MODELS", "markdown", "run", "targets", "why_not"]
