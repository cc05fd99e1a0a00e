"""The vector-search benchmark's parameters: what a full and a quick run measure (``Plan``), the HNSW parameters
under test (``Hnsw``), and the fixed figures of the protocol."""

from __future__ import annotations

from dataclasses import dataclass

from server.settings import Settings

NAME = "vector_search"
TOP_K = 10
RECALL_TARGET = 0.95
SEED = 20240611
BATCH_NQ = 64  # queries per batched search (how the gateway sends coalesced queries)
TIE_EPS = 1e-5  # recall: a returned id counts when its exact score reaches the true k-th score minus this
EFS_FULL = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EFS_QUICK = (10, 16, 32, 64, 128)
TIE_BAND = 1.10  # sweep: a setting within 10 % of the lowest search cost ties (see sweep.choose)
MIN_SAMPLES = 20  # latency samples per measurement, at the least
# The product's defaults (the class's, not this environment's): the "current" graph the tuning starts from.
DEFAULTS = {k: Settings.model_fields[k].default for k in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef")}
LITE_1M_REASON = ("Milvus Lite at 1M is not run by default (`--lite-1m` adds it): its search times at 100k above "
                  "already show it is not a 1M-scale option.")


@dataclass(frozen=True)
class Plan:
    quick: bool
    real_train: int  # train images in the real set
    real_copies: int  # seeded copies of the first train images added to it
    synth_sizes: tuple[int, ...]
    lite_sizes: tuple[int, ...]  # synthetic sizes Milvus Lite runs at
    n_clusters: int
    n_queries: int  # queries for recall (and the pool the latency loops cycle through)
    lat1_max: int  # nq=1 samples per engine (or lat_max_s, whichever first; at least MIN_SAMPLES)
    lat64_max: int
    lat_max_s: float
    ef_lat_n: int  # nq=1 samples per ef in the sweeps
    sweep_m: tuple[int, ...]
    sweep_efc: tuple[int, ...]
    sweep_ef: tuple[int, ...]
    add_chunk: int  # rows per FAISS add call (progress granularity)
    shared_server: bool  # one Milvus server for the whole run (quick) or a fresh one per collection
    overlap_milvus: bool  # quick: insert into every Milvus server collection first so their index builds overlap
    settle: bool  # Milvus server: wait until its own compactions and re-indexing are over (benchmarks.milvus_settle)


def make_plan(quick: bool = False, lite_1m: bool = False, skip_1m: bool = False) -> Plan:
    if quick:
        return Plan(quick=True, real_train=5000, real_copies=1000, synth_sizes=(10_000,), lite_sizes=(10_000,),
                    n_clusters=100, n_queries=192, lat1_max=40, lat64_max=6, lat_max_s=2.0, ef_lat_n=10,
                    sweep_m=(8, 16), sweep_efc=(32, 64), sweep_ef=EFS_QUICK, add_chunk=2000,
                    shared_server=True, overlap_milvus=True, settle=False)
    sizes = (100_000,) if skip_1m else (100_000, 1_000_000)
    lite = (100_000, 1_000_000) if lite_1m and not skip_1m else (100_000,)
    return Plan(quick=False, real_train=60_000, real_copies=40_000, synth_sizes=sizes, lite_sizes=lite,
                n_clusters=1000, n_queries=1000, lat1_max=500, lat64_max=100, lat_max_s=10.0, ef_lat_n=200,
                sweep_m=(8, 16, 32), sweep_efc=(40, 100, 200), sweep_ef=EFS_FULL, add_chunk=20_000,
                shared_server=False, overlap_milvus=False, settle=True)


@dataclass(frozen=True)
class Hnsw:
    m: int
    ef_construction: int
    ef: int

    def applied(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"hnsw_m": self.m, "hnsw_ef_construction": self.ef_construction,
                                           "hnsw_ef": self.ef})

    def as_dict(self) -> dict:
        return {"M": self.m, "efConstruction": self.ef_construction, "ef": self.ef}

    def __str__(self) -> str:
        return f"M={self.m} efC={self.ef_construction} ef={self.ef}"


CURRENT = Hnsw(DEFAULTS["hnsw_m"], DEFAULTS["hnsw_ef_construction"], DEFAULTS["hnsw_ef"])
