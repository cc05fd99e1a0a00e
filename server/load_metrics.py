"""Prometheus metrics of serving under load: the decode budget, refusals, queue expiry and live retrieval quality.
Registered on the gateway's own registry (``GatewayMetrics.registry``), so they are served with the others."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RECALL_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(-10, 11))  # cosine similarity, -1 .. 1


class LoadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decode_bytes = Gauge("vsearch_decode_bytes_in_flight", "estimated bytes of images being decoded "
                                  "(budget: decode_budget_bytes)", registry=registry)
        self.decode_waiting = Gauge("vsearch_decode_waiting", "large images waiting for the decode budget",
                                    registry=registry)
        self.queries_in_flight = Gauge("vsearch_queries_in_flight", "search queries admitted and not yet answered",
                                       registry=registry)
        self.refused = Counter("vsearch_refused_total", "calls refused for load (RESOURCE_EXHAUSTED with a "
                               "retry-after-ms hint), by reason", ["reason"], registry=registry)
        self.expired = Counter("vsearch_queue_expired_total", "queued queries dropped before any backend work: their "
                               "deadline passed (deadline) or their caller gave up (cancelled)", ["reason"],
                               registry=registry)
        self.recall = Histogram("vsearch_live_recall_at_k", "recall@k of sampled live searches against the "
                                "reference search", ["model"], buckets=RECALL_BUCKETS, registry=registry)
        self.top_score = Histogram("vsearch_top_score", "cosine score of the best hit of each search", ["model"],
                                   buckets=SCORE_BUCKETS, registry=registry)
        self.recall_dropped = Counter("vsearch_live_recall_dropped_total", "sampled searches not measured: the "
                                      "reference queue was full", registry=registry)
