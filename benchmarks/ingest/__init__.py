"""Bulk indexing end to end: ``vsearch index --dataset fashion-mnist`` run as a user runs it, through Triton, a Milvus
server and the gateway, where its time goes, and its knobs compared on a subset."""

from benchmarks.ingest.benchmark import NAME, run
from benchmarks.ingest.section import markdown, targets, verdict

__all__ = ["NAME", "markdown", "run", "targets", "verdict"]
