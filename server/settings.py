"""The one settings object: every port, address, limit and batch size, from ``VSEARCH_*`` env vars
(or a ``.env`` file) and CLI flags. Nothing else in the code base keeps its own constants for these."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VSEARCH_", env_file=".env", extra="ignore")

    # Models and the Triton model repository
    models: list[str] = Field(default=["dino_vit_femto_p7_fmnist", "efficientnet_lite0_imagenet"],
                              description="extractors exported to the repository and served")
    model_repository: Path = Path("model_repository")
    export_target: str = Field("cpu", description="cpu: python backend + onnxruntime; gpu: onnxruntime/TensorRT")
    triton_max_batch_size: int = 64
    triton_preferred_batch_sizes: list[int] = [8, 16, 32]
    triton_max_queue_delay_us: int = Field(0, description="how long Triton waits to fill a batch (chosen from "
                                           "the curve in BENCHMARKS.md: more adds latency, not throughput, here)")
    triton_instance_count: int = 1
    onnx_opset: int = 17

    # Where the embeddings are computed: Triton (the default, and production's), or ONNX Runtime inside the gateway
    # process, reading the same model repository (a small deployment with no Triton to run).
    runtime: Literal["triton", "onnxruntime"] = "triton"
    onnxruntime_threads: int = Field(0, description="ONNX Runtime threads with runtime onnxruntime (0: its default)")

    # Triton server (launched from the nvidia-pytriton wheel, or any URL)
    triton_host: str = "127.0.0.1"
    triton_grpc_port: int = 8001
    triton_http_port: int = 8000
    triton_metrics_port: int = 8002
    triton_urls: list[str] = Field(default=[], description="host:port of Triton replicas; default host:grpc_port")
    triton_timeout_s: float = 10.0
    triton_retries: int = 2

    # Milvus (a server URI, or a Milvus Lite .db path)
    milvus_uri: str = "http://127.0.0.1:19530"
    milvus_port: int = 19530
    milvus_data_dir: Path = Path("data/milvus")
    # HNSW: picked by benchmarks/vector_search/ (BENCHMARKS.md): the cheapest graph and search ef with recall@10
    # >= 0.95 on real embeddings and on 100k/1M synthetic 384-d sets (ef is raised to top_k when top_k is larger).
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef: int = 24
    hnsw_ef_filtered: int = Field(64, description="search ef when a filter is set: at ef 24 Milvus Lite missed one "
                                  "of 2 rows matched by an id filter among 300 (tests/server/test_vector_store.py)")
    flush_min_rows: int = Field(1000, description="a collection that got at least this many rows and then no "
                                "write for flush_idle_s is flushed, so Milvus seals and indexes them (growing segments "
                                "are searched by brute force)")
    flush_idle_s: float = 2.0
    milvus_write_batch_rows: int = Field(5000, description="most rows in one Milvus insert/upsert message")
    milvus_write_batch_bytes: int = Field(16 << 20, description="most bytes in one Milvus insert/upsert message "
                                          "(well under the proxy's 64 MB limit)")

    # Gateway
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9464
    auth_token: str = Field("", description="bearer token required for mutating RPCs when set")
    auth_reads: bool = Field(False, description="also require the token for read RPCs")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    filter_fields: list[str] = Field(default=["label", "class_name", "source", "split", "category", "tag"],
                                     description="metadata fields clients may filter on")
    coalesce_max_batch: int = Field(64, description="most concurrent queries embedded / searched in one backend call")
    coalesce_max_in_flight: int = Field(1, description="backend calls per model in flight before queries queue")
    inline_decode_max_pixels: int = Field(256 * 256, description="images up to this size are decoded on the event "
                                          "loop (a thread hop costs more than decoding them); larger in threads")
    health_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"

    # Limits
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    default_top_k: int = Field(10, description="top_k of a search that leaves it unset (0)")
    max_top_k: int = 1000
    max_batch_queries: int = 64
    max_id_length: int = Field(256, description="most bytes of an id in UTF-8 (Milvus's VARCHAR max_length)")
    max_metadata_bytes: int = Field(16 * 1024, description="most bytes of an item's metadata as stored (JSON, UTF-8)")
    max_string_value_bytes: int = Field(1024, description="most bytes of one string in metadata or a filter")
    max_filter_clauses: int = 32
    max_filter_in_values: int = 256
    upsert_chunk: int = Field(64, description="upserted items decoded, embedded and written together (bounds the "
                              "memory of a long stream)")
    milvus_timeout_s: float = 10.0
    milvus_ping_timeout_s: float = Field(2.0, description="a health check that takes longer counts Milvus as down")
    milvus_load_timeout_s: float = 60.0

    # --- A web page for people, and "why is this similar" through the API ---
    thumbnail_px: int = Field(64, ge=0, le=256, description="longer side of the thumbnail stored with each upserted "
                              "image (PNG when grey, JPEG otherwise; smaller images kept as they are); 0 = no "
                              "thumbnails; at most 256 (an encoded thumbnail over 48 KB is not stored)")
    max_explain_top_k: int = Field(100, description="most hits one explained search returns (explain embeds each "
                                   "hit's thumbnail)")
    overlay_px: int = Field(160, description="side of the PNG heatmap overlays Search returns with explain_png")
    web_port: int = Field(8080, description="port of the web page `vsearch up` serves (clients/web)")

    # --- Serving under load: bounded memory, fast shedding, live recall (issue 17) ---
    decode_budget_bytes: int = Field(128 << 20, description="decoded-pixel bytes in flight across all requests "
                                     "(estimated from headers before decoding); larger decodes wait or are refused. "
                                     "One image costing more than the whole budget is decoded alone")
    decode_workers: int = Field(2, description="threads decoding images too large to decode on the event loop")
    max_searches_in_flight: int = Field(256, description="queries (Search counts 1, SearchBatch its size) admitted "
                                        "at once; past it calls are refused RESOURCE_EXHAUSTED with retry-after-ms")
    retry_after_min_ms: int = Field(20, description="the smallest retry-after-ms hint a refusal carries")
    max_queue_wait_ms: float = Field(0.0, description="refuse a query the queue ahead would keep longer than this "
                                     "even when its deadline allows (a latency objective); 0: the deadline only")
    live_recall_sample_rate: float = Field(0.01, ge=0.0, le=1.0, description="share of live searches re-run "
                                           "against the reference search in the background to export recall@k")
    live_recall_queue: int = Field(8, description="sampled searches waiting for their reference run; more are "
                                   "dropped (bounds the CPU the measurement takes)")
    live_recall_reference_ef: int = Field(2048, description="HNSW ef of the reference search (Milvus 2.3 cannot "
                                          "search an HNSW collection exhaustively; a beam this wide is near-exact)")

    # --- Near-duplicates as a product: calibrated verdicts, a dedup gate on upsert, duplicate groups, Embed ---
    calibration_recheck_s: float = Field(10.0, description="a model's calibration.json is re-read at most this "
                                         "often (a recalibration is picked up without a restart)")
    dedup_recent_s: float = Field(6.0, description="the dedup gate also compares with this gateway's writes of the "
                                  "last seconds, kept in memory: Milvus reads at Bounded consistency (5 s stale)")
    dedup_recent_max_items: int = Field(100_000, description="most recent writes per model the gate keeps")
    dedup_gate_neighbours: int = Field(4, description="stored neighbours the gate looks at per upserted item (the "
                                       "item's own id can be one of them)")
    dedup_default_neighbours: int = Field(10, description="neighbours per item FindDuplicates looks at by default")
    dedup_scan_batch: int = Field(256, description="items FindDuplicates reads and range-searches per step")
    dedup_max_pairs: int = Field(2_000_000, description="most duplicate pairs FindDuplicates holds; past it the call "
                                 "fails with RESOURCE_EXHAUSTED (raise min_score)")

    def triton_url_list(self) -> list[str]:
        return self.triton_urls or [f"{self.triton_host}:{self.triton_grpc_port}"]
