"""Training throughput per preset: images per second of the real training loop on this machine's cores."""

from benchmarks.training.benchmark import NAME, run
from benchmarks.training.section import markdown, targets

__all__ = ["NAME", "markdown", "run", "targets"]
