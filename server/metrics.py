"""Prometheus metrics of the gateway (served on ``settings.metrics_port``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class GatewayMetrics:
    """One registry per gateway instance, so tests can run several gateways in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vsearch_requests_total", "RPCs by method and status code", ["method", "code"],
                                registry=self.registry)
        self.latency = Histogram("vsearch_request_seconds", "RPC latency", ["method"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.stage = Histogram("vsearch_stage_seconds", "time per stage (decode, embed, search)", ["stage"],
                               buckets=LATENCY_BUCKETS, registry=self.registry)
        self.backend_errors = Counter("vsearch_backend_errors_total", "failed calls to Triton or Milvus",
                                      ["backend"], registry=self.registry)
        self.upserted = Counter("vsearch_items_upserted_total", "items written", ["model"], registry=self.registry)
        self.upsert_duplicates = Counter("vsearch_upsert_duplicates_total", "upserted items found to duplicate another "
                                         "item, by the action taken (flag, skip, reject)", ["model", "action"],
                                         registry=self.registry)
