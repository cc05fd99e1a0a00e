"""Throughput at a latency objective: an open-loop (Poisson arrivals) load stepped over offered rates, for
Fashion-MNIST search by image over the 70,000-image index and for photo search, with the highest rate served at
p99 <= 50 ms, the CPU time per query of every process and the latency curve as a PNG; in the same run ONNX Runtime
alone and the photo indexing rate, which the photo figures are compared with."""

from benchmarks.open_loop.benchmark import NAME, OBJECTIVE_P99_MS, run
from benchmarks.open_loop.section import markdown, targets

__all__ = ["NAME", "OBJECTIVE_P99_MS", "markdown", "run", "targets"]
