"""Search by image through the gateway (Triton + Milvus behind it) over the Fashion-MNIST index.

For each concurrency: QPS, client-side p50/p99, the gateway's own stage timings (decode, embed, vector search,
gateway overhead = total minus the stages) and the CPU time every process spent per query (client, gateway,
Triton with its python-backend stub, Milvus), which is what shows where the 2 cores go. The same queries are
then sent by a script that calls Triton and Milvus directly (decode, ``tritonclient`` infer, ``pymilvus`` search,
one query at a time like the gateway's callers): the gateway's cost is the difference.

The load generator is one asyncio process (``grpc.aio``), so the client's own cost per query is small and
measured. ``--profile`` samples the gateway with py-spy during the headline row (stacks + top functions).

The package: ``plan`` (fixed figures), ``index`` (the index, built with ``vsearch index`` when missing, and
settled), ``load`` (the gateway and direct loads), ``profile`` (py-spy), ``benchmark`` (the run) and ``section``
(BENCHMARKS.md)."""

from benchmarks.gateway_search.benchmark import run
from benchmarks.gateway_search.plan import HEADLINE_CONCURRENCY, HEADLINE_P99_MS, HEADLINE_QPS, NAME
from benchmarks.gateway_search.section import markdown, targets

__all__ = ["HEADLINE_CONCURRENCY", "HEADLINE_P99_MS", "HEADLINE_QPS", "NAME", "markdown", "run", "targets"]
