"""Why-similar's cost: the served graph with its extra ``patch_contributions`` output against the bare embedding
export (what a plain search runs must not be slower), and the cost per search of plain / explain / explain_png
through the real stack."""

from benchmarks.explain.benchmark import NAME, run
from benchmarks.explain.section import markdown, targets

__all__ = ["NAME", "markdown", "run", "targets"]
