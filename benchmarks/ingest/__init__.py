"""Bulk indexing end to end: ``vsearch index --dataset fashion-mnist`` through the real stack.

Starts Triton (the served Fashion-MNIST ViT only), a Milvus server on a temporary data dir and the gateway on a free
port, then runs ``vsearch index`` as a user runs it (``python -m clients.cli index``, a process of its own) with the
CLI's own defaults (read from its ``--help``, so the measured run is the one a user gets). Reported: images/s, wall
time, and where the time goes: CPU seconds of each process (the command's, the gateway's, Triton's with its
python-backend stubs, Milvus's), what encoding the images to PNG costs, the gateway's Upsert/Get RPC times (its
Prometheus metrics) and Triton's own statistics (executions, mean batch, compute time).

Then the knobs of ``vsearch index`` (batch size, concurrent streams, and ``--no-resume`` at the default ones) are
compared on a subset, in two rounds of alternating order: before each run the subset's ids are deleted, so every run
indexes the same images into the same collection.

The package: ``plan`` (the knob settings), ``measure`` (one run and its split), ``benchmark`` (the run) and
``section`` (BENCHMARKS.md, the verdict on the knobs)."""

from benchmarks.ingest.benchmark import run
from benchmarks.ingest.plan import NAME
from benchmarks.ingest.section import markdown, targets, verdict

__all__ = ["NAME", "markdown", "run", "targets", "verdict"]
