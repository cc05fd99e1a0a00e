"""Finding the duplicates of a collection: known edited copies (the graded levels of extractors/copies.py)
injected into the 70,000 Fashion-MNIST images and into the photos, found by FindDuplicates (``vsearch dedup``)
and by perceptual hashing (imagehash's pHash and dHash at several Hamming thresholds) in the same run; plus what
the dedup gate costs on the upsert path."""

from benchmarks.dedup.benchmark import NAME, run
from benchmarks.dedup.section import markdown, targets

__all__ = ["NAME", "markdown", "run", "targets"]
