"""Search by image through the gateway (Triton + Milvus behind it) over the Fashion-MNIST index: QPS, latency, the
gateway's own stage timings and the CPU time of every process per query, which is what shows where the 2 cores go;
then the same queries from a script calling Triton and Milvus directly: the gateway's cost is the difference."""

from benchmarks.gateway_search.benchmark import HEADLINE_CONCURRENCY, HEADLINE_P99_MS, HEADLINE_QPS, NAME, run
from benchmarks.gateway_search.section import markdown, targets

__all__ = ["HEADLINE_CONCURRENCY", "HEADLINE_P99_MS", "HEADLINE_QPS", "NAME", "markdown", "run", "targets"]
