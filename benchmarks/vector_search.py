"""Vector search engines at 100k and 1M vectors, and HNSW tuning on real embeddings.

Engines: the Milvus 2.3.5 server (the product default, measured through ``MilvusVectorStore`` so the product's own
code path is timed: its upsert batching, its search parameters ``ef = max(hnsw_ef, top_k)``), Milvus Lite (the same
store on a ``.db`` path), FAISS HNSW (``IndexHNSWFlat``, inner product on unit vectors = cosine) and FAISS flat
(exact, the reference). Data:

- synthetic: a seeded Gaussian mixture in 384-d (1,000 components, each a random centre plus a random 16-d
  subspace plus a little isotropic noise), L2-normalised; the 100k set is the first 100k rows of the 1M set, the
  queries are fresh draws from the same mixture. Isotropic random vectors are deliberately not used: in 384-d all
  their distances are nearly equal, so "nearest neighbours" are noise and HNSW recall collapses (0.13-0.36 in the
  shared notes); real embeddings have a low intrinsic dimension, which is what the mixture imitates.
- real: embeddings of our Fashion-MNIST DINO ViT (``dino_vit_femto_p7_fmnist``, 128-d): the 60k train images plus
  40k seeded strong copies of train images (``extractors.copies``, resized to 28x28 like the gateway does) = 100k
  rows; queries are test images. Cached as .npy in ``benchmarks/cache/vector_search/`` (gitignored).

For each engine: insert rate, index build time (Milvus: from the end of the inserts until the index is built, the
indexed segments are loaded and a search answers; FAISS HNSW and Milvus Lite build the graph during the insert),
search p50/p99 at nq=1 and nq=64 (top_k 10), recall@10 against exact numpy ground truth (a returned id counts when
its exact score reaches the true 10th score minus 1e-5, so exact ties are not misses), and memory (RSS growth of
the process holding the index). HNSW tuning: a FAISS sweep over M, efConstruction and ef on the real embeddings and
the 100k synthetic set picks the graph (the lowest search cost with recall@10 >= 0.95 on both); the Milvus server
then sweeps ef on every data set with that graph, and the chosen ef is the smallest that reaches the target on all
of them (the product has one ``hnsw_ef`` for every model).

``python -m benchmarks.vector_search`` (about 40 min on 2 cores; ``--quick`` under a minute and a half;
``--lite-1m`` adds Milvus Lite at 1M (slow); ``--skip-1m`` leaves out the 1M rows)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    track,
)
from rich.table import Table

from benchmarks.common import MILVUS_SETTLE_S as SETTLE_QUIET_S
from benchmarks.common import Target, write_result
from server.settings import Settings
from server.vector_store.milvus import _MAX_BATCH_ROWS as UPSERT_ROWS  # the store's own batch limit

console = Console()
NAME = "vector_search"
CACHE = Path(__file__).parent / "cache" / "vector_search"
MODEL = "dino_vit_femto_p7_fmnist"
TOP_K = 10
RECALL_TARGET = 0.95
SEED = 20240611
BATCH_NQ = 64
TIE_EPS = 1e-5
SEGMENT_MB = 512  # Milvus 2.3 default dataCoord.segment.maxSize
SYNTH_DIM = 384
SYNTH_SUBSPACE = 16
SYNTH_SPREAD = 0.6  # norm of a point's offset inside its component's subspace (centres have norm ~1)
SYNTH_NOISE = 0.1  # norm of the isotropic noise
SYNTH_BLOCK = 100_000  # rows generated per seeded block: the 100k set is the first block of the 1M set
EFS_FULL = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
EFS_QUICK = (10, 16, 32, 64, 128)
TIE_BAND = 1.10  # sweep: a setting within 10 % of the lowest search cost ties (see choose)
DEFAULTS = {k: Settings.model_fields[k].default for k in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef")}
LITE_1M_REASON = ("Milvus Lite at 1M is not run by default (`--lite-1m` adds it): its search times at 100k above "
                  "already show it is not a 1M-scale option.")


# -- plan -------------------------------------------------------------------------------------------------------
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
    settle: bool  # Milvus server: wait until its own compactions and re-indexing are over (see MilvusEngine._wait)


MIN_SAMPLES = 20


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

    def settings(self) -> Settings:
        return Settings(hnsw_m=self.m, hnsw_ef_construction=self.ef_construction, hnsw_ef=self.ef)

    def as_dict(self) -> dict:
        return {"M": self.m, "efConstruction": self.ef_construction, "ef": self.ef}

    def __str__(self) -> str:
        return f"M={self.m} efC={self.ef_construction} ef={self.ef}"


CURRENT = Hnsw(DEFAULTS["hnsw_m"], DEFAULTS["hnsw_ef_construction"], DEFAULTS["hnsw_ef"])


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    key: str  # "real", "synthetic_100k", ...
    title: str
    db: np.ndarray  # [N, D] float32, unit rows
    queries: np.ndarray  # [Q, D] float32, unit rows
    gt_kth: np.ndarray | None = None  # [Q] exact k-th score

    @property
    def n(self) -> int:
        return len(self.db)

    @property
    def dim(self) -> int:
        return self.db.shape[1]

    def describe(self) -> dict:
        return {"title": self.title, "rows": self.n, "dim": self.dim, "queries": len(self.queries)}


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _mixture(dim: int, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) / np.float32(math.sqrt(dim))
    bases = rng.standard_normal((n_clusters, SYNTH_SUBSPACE, dim)).astype(np.float32)
    bases *= np.float32(SYNTH_SPREAD / math.sqrt(dim * SYNTH_SUBSPACE))
    weights = rng.dirichlet(np.full(n_clusters, 2.0))  # unequal component sizes
    return centres, bases, weights


def _mixture_draw(rng: np.random.Generator, n: int, centres: np.ndarray, bases: np.ndarray,
                  weights: np.ndarray) -> np.ndarray:
    dim = centres.shape[1]
    labels = rng.choice(len(centres), size=n, p=weights)
    z = rng.standard_normal((n, SYNTH_SUBSPACE), dtype=np.float32)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= np.float32(SYNTH_NOISE / math.sqrt(dim))
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(centres) + 1))
    for k in range(len(centres)):
        rows = order[bounds[k]:bounds[k + 1]]
        if len(rows):
            x[rows] += centres[k] + z[rows] @ bases[k]
    return _normalise(x)


def synthetic(n: int, n_queries: int, n_clusters: int, dim: int = SYNTH_DIM, seed: int = SEED,
              progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` database rows and ``n_queries`` queries of the seeded mixture (see the module doc). Rows come in
    seeded blocks of 100k, so a smaller set is a prefix of a larger one."""
    centres, bases, weights = _mixture(dim, n_clusters, seed)
    db = np.empty((n, dim), np.float32)
    task = progress.add_task(f"generate {n:,} x {dim} mixture", total=n) if progress else None
    for b, start in enumerate(range(0, n, SYNTH_BLOCK)):
        m = min(SYNTH_BLOCK, n - start)
        block = _mixture_draw(np.random.default_rng([seed, 1, b]), SYNTH_BLOCK, centres, bases, weights)
        db[start:start + m] = block[:m]
        if progress:
            progress.advance(task, m)
    if progress:
        progress.remove_task(task)
    queries = _mixture_draw(np.random.default_rng([seed, 2]), n_queries, centres, bases, weights)
    return db, queries


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int = TOP_K, chunk: int = 65536,
               progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine on unit rows), numpy only: ids [Q, k] and scores [Q, k], best first."""
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_i = np.full((nq, k), -1, np.int64)
    task = progress.add_task(f"exact ground truth ({len(db):,} rows)", total=len(db)) if progress else None
    for start in range(0, len(db), chunk):
        sims = queries @ db[start:start + chunk].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
        if progress:
            progress.advance(task, sims.shape[1])
    if progress:
        progress.remove_task(task)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(best_s, order, axis=1)


def with_ground_truth(ds: Dataset, progress: Progress | None = None) -> Dataset:
    _, scores = exact_topk(ds.db, ds.queries, TOP_K, progress=progress)
    ds.gt_kth = scores[:, -1].copy()
    return ds


def recall_at_k(found: np.ndarray, ds: Dataset, k: int = TOP_K) -> float:
    """Mean recall@k of ``found`` ([Q, >=k] ids, -1 for none) against the exact neighbours, tie-aware: a returned
    id counts when its exact score is at least the true k-th score (minus TIE_EPS)."""
    assert ds.gt_kth is not None
    hits = 0
    for i in range(len(found)):
        ids = np.unique(found[i, :k][found[i, :k] >= 0])
        if len(ids):
            scores = ds.db[ids] @ ds.queries[i]
            hits += int((scores >= ds.gt_kth[i] - TIE_EPS).sum())
    return hits / (len(found) * k)


def _weights_fingerprint() -> str:
    from extractors.registry import get_spec

    path = get_spec(MODEL).weights()
    if path is None or not Path(path).exists():
        return "none"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _copy_pixels(ds, indices: range, seed: int) -> np.ndarray:
    """uint8 [N, 3, 28, 28] of one seeded strong copy per train image, preprocessed like the gateway does."""
    from extractors.copies import CopyConfig, copy_seed, make_copy
    from server.imaging import to_model_input

    cfg = CopyConfig.strong()
    out = np.empty((len(indices), 3, 28, 28), np.uint8)
    for j, i in enumerate(track(indices, description=f"{len(indices):,} seeded copies", console=console)):
        img, _ = make_copy(ds.pil(i), np.random.default_rng(copy_seed(seed, i, 0)), cfg)
        out[j] = to_model_input(img, 28)
    return out


def _embed(pixels: np.ndarray, label: str) -> np.ndarray:
    import torch

    from extractors.knn_report import embed_uint8

    with torch.inference_mode():
        return embed_uint8(MODEL, torch.from_numpy(pixels), label=label).numpy().astype(np.float32)


def real_embeddings(plan: Plan, cache: Path = CACHE) -> Dataset:
    """The real set (train embeddings + copies' embeddings) and its queries (test embeddings). The full set is
    computed once and cached in ``cache``; quick mode slices the cache when it exists, else embeds its small
    subset in memory (and writes nothing)."""
    from extractors.datasets import load_fashion_mnist
    from extractors.training import dataset_to_uint8

    n_train_all, n_copies_all = 60_000, 40_000
    files = {k: cache / f"fmnist_{MODEL}_{k}.npy" for k in ("train", "copies", "test")}
    meta_path = cache / f"fmnist_{MODEL}_meta.json"
    meta = {"model": MODEL, "weights": _weights_fingerprint(), "train": n_train_all, "copies": n_copies_all,
            "copy_preset": "strong", "seed": SEED}
    cached = meta_path.exists() and json.loads(meta_path.read_text()) == meta and all(p.exists() for p in
                                                                                         files.values())
    test_order = np.random.default_rng([SEED, 3]).permutation(10_000)[:plan.n_queries]
    title = (f"Fashion-MNIST {MODEL} embeddings: {plan.real_train:,} train images + {plan.real_copies:,} seeded "
             "strong copies of train images; queries are test images")
    if cached:
        train = np.load(files["train"], mmap_mode="r")[:plan.real_train]
        copies = np.load(files["copies"], mmap_mode="r")[:plan.real_copies]
        queries = np.load(files["test"], mmap_mode="r")[test_order]
        console.print(f"real embeddings from the cache {cache}")
    elif plan.quick:
        tr = load_fashion_mnist("train")
        train = _embed(dataset_to_uint8(tr.subset(np.arange(plan.real_train))).numpy(), "embed train subset")
        copies = _embed(_copy_pixels(tr, range(plan.real_copies), SEED), "embed copies")
        queries = _embed(dataset_to_uint8(load_fashion_mnist("test").subset(test_order)).numpy(), "embed test subset")
    else:
        tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
        t0 = time.perf_counter()
        train_all = _embed(dataset_to_uint8(tr).numpy(), "embed 60k train")
        copies_all = _embed(_copy_pixels(tr, range(n_copies_all), SEED), "embed 40k copies")
        test_all = _embed(dataset_to_uint8(te).numpy(), "embed 10k test")
        cache.mkdir(parents=True, exist_ok=True)
        for key, arr in (("train", train_all), ("copies", copies_all), ("test", test_all)):
            np.save(files[key], arr)
        meta_path.write_text(json.dumps(meta))
        console.print(f"real embeddings computed in {time.perf_counter() - t0:.0f} s, cached in {cache}")
        train, copies, queries = train_all[:plan.real_train], copies_all[:plan.real_copies], test_all[test_order]
    db = _normalise(np.concatenate([train, copies]).astype(np.float32))
    return Dataset("real", title, db, _normalise(np.array(queries, dtype=np.float32)))


# -- engines ----------------------------------------------------------------------------------------------------
def _rss(pid: int) -> int:
    """Resident memory of a process and its children, bytes."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += q.memory_info().rss
    return total


_METRIC_LINE = re.compile(r'^milvus_querynode_entity_num\{([^}]*)\}\s+([0-9.e+]+)$', re.M)


def _querynode_growing_rows(server, collection_id: str) -> int:
    """Rows the Milvus query node still serves from growing segments of a collection (its Prometheus metrics;
    their indexed-field label is not a guide for sealed segments: it stays 0 when an index is loaded later)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics_port']}/metrics", timeout=10) as resp:
        text = resp.read().decode("utf-8", "replace")
    total = 0
    for labels, value in _METRIC_LINE.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("collection_id") == collection_id and fields.get("segment_state") == "Growing":
            total += int(float(value))
    return total


class Engine:
    """One index under test. ``load`` inserts every row (and for Milvus asks for the flush); ``wait_built`` returns
    once it searches with its index; ``search`` gives ids [nq, TOP_K] (-1 padded)."""

    kind = ""
    label = ""
    builds_on_insert = False  # the graph is built inside the inserts (FAISS HNSW, Milvus Lite)

    def __init__(self, ds: Dataset, hnsw: Hnsw | None) -> None:
        self.ds = ds
        self.hnsw = hnsw
        self.create_s = math.nan
        self.first_served_s = math.nan  # Milvus server: first time only indexed segments answered
        self.segments: int | None = None  # Milvus server: indexed segments answering once built
        self.insert_s = math.nan
        self.insert_end = math.nan
        self.build_s = math.nan
        self.rss_before = 0

    def rss(self) -> int:
        return _rss(self._pid())

    def _pid(self) -> int:
        return os.getpid()

    def load(self, progress: Progress) -> None:
        self.rss_before = self.rss()
        t0 = time.perf_counter()
        self._create()
        self.create_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._insert(progress)
        self.insert_end = time.perf_counter()
        self.insert_s = self.insert_end - t0

    def wait_built(self, progress: Progress) -> None:
        ready = self._wait(progress)
        self.search(self.ds.queries[:1])
        self.build_s = (ready if ready is not None else time.perf_counter()) - self.insert_end

    def set_ef(self, ef: int) -> None:
        raise NotImplementedError

    def _create(self) -> None:
        """The empty index or collection (not part of the insert time)."""

    def _insert(self, progress: Progress) -> None:
        raise NotImplementedError

    def _wait(self, progress: Progress) -> float | None:
        """Until the index answers; returns when it began to (perf_counter), or None for now."""
        return None

    def search(self, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FaissFlat(Engine):
    kind, label = "faiss_flat", "FAISS flat (exact)"

    def __init__(self, ds: Dataset, hnsw: Hnsw | None = None, chunk: int = 100_000) -> None:
        super().__init__(ds, hnsw)
        self.chunk = chunk
        self.index = None

    def _create(self) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(self.ds.dim)

    def _insert(self, progress: Progress) -> None:
        task = progress.add_task(f"{self.label}: add", total=self.ds.n)
        for s in range(0, self.ds.n, self.chunk):
            block = self.ds.db[s:s + self.chunk]
            self.index.add(block)
            progress.advance(task, len(block))
        progress.remove_task(task)

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q, TOP_K)[1]

    def close(self) -> None:
        self.index = None


class FaissHnsw(FaissFlat):
    """The same adds and searches as flat, on an ``IndexHNSWFlat`` (the graph is built inside the adds)."""

    kind, label = "faiss_hnsw", "FAISS HNSW"
    builds_on_insert = True

    def __init__(self, ds: Dataset, hnsw: Hnsw, chunk: int = 20_000) -> None:
        super().__init__(ds, hnsw, chunk)

    def _create(self) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(self.ds.dim, self.hnsw.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.hnsw.ef_construction
        self.set_ef(self.hnsw.ef)

    def set_ef(self, ef: int) -> None:
        self.hnsw = replace(self.hnsw, ef=ef)
        self.index.hnsw.efSearch = max(ef, TOP_K)  # as the product: ef = max(hnsw_ef, top_k)


class MilvusEngine(Engine):
    """``MilvusVectorStore`` with Settings overrides, on a Milvus server URI or a Milvus Lite ``.db`` path."""

    def __init__(self, ds: Dataset, hnsw: Hnsw, uri: str, server=None, label: str | None = None,
                 collection_tag: str = "", settle: bool = True) -> None:
        from server.vector_store.milvus import MilvusVectorStore, is_lite_uri

        super().__init__(ds, hnsw)
        self.server = server
        self.lite = is_lite_uri(uri)
        self.kind = "milvus_lite" if self.lite else "milvus_server"
        self.label = label or ("Milvus Lite" if self.lite else "Milvus server")
        self.builds_on_insert = self.lite
        self.model = f"bench_{ds.key}{collection_tag}_m{hnsw.m}_efc{hnsw.ef_construction}"
        # Client-side timeouts only (not Settings): a flush or a 1M load takes longer than the gateway's 10 s.
        self.store = MilvusVectorStore(uri, hnsw.settings(), timeout_s=300, load_timeout_s=1200)
        self.uri = uri
        self.sealed = False
        self.settle = settle and not self.lite

    def _pid(self) -> int:
        return self.server.pid if self.server is not None else super()._pid()

    def _create(self) -> None:
        self.store.ensure_collection(self.model, self.ds.dim)  # created with its HNSW index spec, and loaded

    def _insert(self, progress: Progress) -> None:
        ids = [str(i) for i in range(self.ds.n)]
        task = progress.add_task(f"{self.label}: upsert {self.ds.n:,} rows", total=self.ds.n)
        for s in range(0, self.ds.n, UPSERT_ROWS):
            block = self.ds.db[s:s + UPSERT_ROWS]
            self.store.upsert(self.model, ids[s:s + len(block)], block)
            progress.advance(task, len(block))
        progress.remove_task(task)

    def _wait(self, progress: Progress, timeout_s: float = 3600) -> float | None:
        """Until the index covers every row and only indexed sealed segments answer; with ``settle``, until
        Milvus has also stopped reorganising them. Returns when that final state began (perf_counter).

        Milvus 2.3 indexes sealed segments only, so the inserts are flushed first. The query-node metrics tell
        when the growing segments (searched by brute force until the hand-off) are gone: the segment list (sealed
        segments only) shows an indexed segment about a second before the growing one stops answering. Then
        Milvus keeps compacting on its own, each compaction followed by a new index and a hand-off (searches
        change each time): the store's upserts write a delete for every row (Milvus upserts are delete +
        insert), so every segment is rewritten once, and small segments (< half the 512 MB maximum) are merged.
        Its automatic compaction runs every 60 s, so the state counts as settled once the segments the data
        coordinator holds are exactly the ones loaded with an index and that set has not changed for SETTLE_QUIET_S;
        the build ends when that set began answering (``first_served_s``: when an index first answered)."""
        from pymilvus import MilvusClient

        from server.vector_store.milvus import VECTOR_FIELD, collection_name

        name = collection_name(self.model)
        self.seal()
        if self.lite:
            client = self.store._client()  # Milvus Lite: one client per .db in a process, so the store's own
            collection_id = ""
        else:
            client = MilvusClient(uri=self.uri, timeout=60, dedicated=True)
            collection_id = str(client.describe_collection(name)["collection_id"])
        task = progress.add_task(f"{self.label}: index build", total=self.ds.n)
        deadline = time.monotonic() + timeout_s
        state, since = None, time.perf_counter()
        try:
            while True:
                now = time.perf_counter()
                indexed = int(client.describe_index(name, index_name=VECTOR_FIELD).get("indexed_rows", 0))
                if self.lite:
                    served, other, live, loaded = indexed, 0, set(), set()
                else:
                    segments = client.list_loaded_segments(name)
                    loaded = {s.segment_id for s in segments if s.index_id}
                    served = sum(s.num_rows for s in segments if s.index_id)
                    other = sum(1 for s in segments if not s.index_id) + _querynode_growing_rows(self.server,
                                                                                                 collection_id)
                    live = ({s.segment_id for s in client.list_persistent_segments(name) if s.num_rows > 0}
                            if self.settle else loaded)
                ok = indexed >= self.ds.n and served >= self.ds.n and not other and live == loaded
                if ok and math.isnan(self.first_served_s) and not self.lite:
                    self.first_served_s = now - self.insert_end
                new_state = (frozenset(loaded), frozenset(live)) if ok else None
                if new_state != state:
                    state, since = new_state, now
                quiet = now - since
                # Without settle, one unchanged poll after the hand-off is enough.
                if ok and quiet >= (SETTLE_QUIET_S if self.settle else 0.9):
                    self.segments = len(loaded) if not self.lite else None
                    return since
                progress.update(task, completed=min(indexed, self.ds.n), description=(
                    f"{self.label}: index build" if indexed < self.ds.n else
                    f"{self.label}: {len(loaded)} indexed segments, settled for {quiet:.0f} s" if ok else
                    f"{self.label}: loading indexed segments ({len(live - loaded)} to load, "
                    f"{len(loaded - live)} to release, {other} rows or segments unindexed)"))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label}: index not settled after {timeout_s} s (indexed {indexed}, "
                                       f"served {served}, unindexed {other}, segments {len(live)} / {len(loaded)})")
                time.sleep(1.0)
        finally:
            progress.remove_task(task)
            if not self.lite:
                client.close()

    def seal(self) -> None:
        """Flush once: Milvus indexes sealed segments only (Milvus Lite's store flushes after every upsert)."""
        if not self.lite and not self.sealed:
            self.store.flush(self.model)
            self.sealed = True

    def set_ef(self, ef: int) -> None:
        self.hnsw = replace(self.hnsw, ef=ef)
        self.store.settings = self.store.settings.model_copy(update={"hnsw_ef": ef})

    def search(self, q: np.ndarray) -> np.ndarray:
        hits = self.store.search(self.model, q, TOP_K)
        out = np.full((len(q), TOP_K), -1, np.int64)
        for i, row in enumerate(hits):
            for j, h in enumerate(row[:TOP_K]):
                out[i, j] = int(h.id)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.drop(self.model)
        self.store.close()


# -- measurements -----------------------------------------------------------------------------------------------
_T0 = [time.perf_counter()]


def _clock() -> str:
    """Time since the run started, for the log lines."""
    return f"[dim]{time.perf_counter() - _T0[0]:6.0f} s[/]"


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def latency(fn: Callable[[np.ndarray], object], batches: list[np.ndarray], max_n: int, max_s: float,
            progress: Progress, label: str, warmup: int = 3, min_n: int = MIN_SAMPLES) -> dict:
    """Per-call latency over ``batches`` (cycled): ``max_n`` calls or ``max_s`` seconds, whichever comes first,
    but at least ``min_n`` calls."""
    for q in batches[:warmup]:
        fn(q)
    task = progress.add_task(label, total=max_n)
    samples: list[float] = []
    stop = time.perf_counter() + max_s
    while len(samples) < max_n and (len(samples) < min_n or time.perf_counter() < stop):
        q = batches[len(samples) % len(batches)]
        t0 = time.perf_counter()
        fn(q)
        samples.append((time.perf_counter() - t0) * 1e3)
        progress.advance(task)
    progress.remove_task(task)
    a = np.asarray(samples)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "mean_ms": round(float(a.mean()), 3)}


def _singles(ds: Dataset) -> list[np.ndarray]:
    return [ds.queries[i:i + 1] for i in range(len(ds.queries))]


def _batches(ds: Dataset) -> list[np.ndarray]:
    return [ds.queries[s:s + BATCH_NQ] for s in range(0, len(ds.queries) - BATCH_NQ + 1, BATCH_NQ)]


def search_all(engine: Engine) -> np.ndarray:
    """Every query, in batches of BATCH_NQ (how the gateway sends coalesced queries)."""
    q = engine.ds.queries
    return np.concatenate([engine.search(q[s:s + BATCH_NQ]) for s in range(0, len(q), BATCH_NQ)])


def ef_sweep(engine: Engine, efs: tuple[int, ...], n_lat: int, max_s: float, progress: Progress) -> list[dict]:
    """Recall@10 (all queries) and nq=1 latency at each search ef, on an engine already built."""
    out = []
    singles = _singles(engine.ds)
    task = progress.add_task(f"{engine.label}: ef sweep", total=len(efs))
    for ef in efs:
        engine.set_ef(ef)
        rec = recall_at_k(search_all(engine), engine.ds)
        lat = latency(engine.search, singles, n_lat, max_s, progress, f"{engine.label} ef={ef}: nq=1", min_n=n_lat)
        out.append({"ef": ef, "recall_at_10": round(rec, 4), "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})
        progress.advance(task)
    progress.remove_task(task)
    return out


def measure(engine: Engine, plan: Plan, progress: Progress, role: str | None = None,
            before: Callable[[Engine], None] | None = None) -> dict:
    """Insert (unless already loaded), wait for the index, then recall and latencies; ``before`` runs once the
    index is built (an ef sweep that sets the ef to measure at)."""
    ds = engine.ds
    if math.isnan(engine.insert_end):
        engine.load(progress)
    if math.isnan(engine.build_s):
        engine.wait_built(progress)
    if before is not None:
        before(engine)
    rec = recall_at_k(search_all(engine), ds)
    nq1 = latency(engine.search, _singles(ds), plan.lat1_max, plan.lat_max_s, progress, f"{engine.label}: nq=1")
    nq64 = latency(engine.search, _batches(ds), plan.lat64_max, plan.lat_max_s, progress,
                   f"{engine.label}: nq={BATCH_NQ}")
    rss_after = engine.rss()
    row = {"dataset": ds.key, "engine": engine.kind, "label": engine.label, "role": role,
           "hnsw": engine.hnsw.as_dict() if engine.hnsw else None, "rows": ds.n, "dim": ds.dim,
           "create_s": round(engine.create_s, 2), "insert_s": round(engine.insert_s, 2),
           "insert_rows_per_s": round(ds.n / engine.insert_s, 1),
           "build_s": round(engine.build_s, 2), "build_in_insert": engine.builds_on_insert,
           "first_indexed_s": None if math.isnan(engine.first_served_s) else round(engine.first_served_s, 2),
           "segments": engine.segments,
           "searchable_s": round(engine.insert_s + engine.build_s, 2), "recall_at_10": round(rec, 4),
           "nq1": nq1, f"nq{BATCH_NQ}": nq64, "rss_growth_mb": round((rss_after - engine.rss_before) / 2**20, 1),
           "overlapped_build": plan.overlap_milvus and engine.kind == "milvus_server"}
    console.print(f"{_clock()} [bold]{ds.key}[/] {engine.label} ({engine.hnsw or 'exact'}): insert "
                  f"{row['insert_rows_per_s']:,.0f} rows/s, build {row['build_s']:.1f} s, recall@10 {rec:.4f}, "
                  f"nq=1 p50 {nq1['p50_ms']:.2f} ms, "
                  f"nq={BATCH_NQ} p50 {nq64['p50_ms']:.1f} ms, RSS +{row['rss_growth_mb']:.0f} MB")
    return row


def choose(rows: list[dict], keys: list[str], target: float = RECALL_TARGET) -> dict:
    """The sweep's pick over the data sets ``keys``. For every graph (M, efConstruction), its ef is the smallest
    (>= top_k) at which recall@10 reaches the target on every one of them; its search cost is the distance
    computations per query times the dimension, summed over them (what an HNSW search's time is made of, and
    deterministic where timings on a shared machine are not). The lowest cost wins; settings within TIE_BAND of it
    tie, and ties go to the graph that needs the smallest ef (the better-connected graph), then to the fastest
    build. No graph reaching the target: the best worst-case recall."""
    by_graph: dict[tuple[int, int], dict[int, dict[str, dict]]] = {}
    for r in rows:
        if r["dataset"] in keys:
            by_graph.setdefault((r["M"], r["efConstruction"]), {}).setdefault(r["ef"], {})[r["dataset"]] = r
    candidates = []
    for (m, efc), by_ef in by_graph.items():
        for ef in sorted(by_ef):
            per = by_ef[ef]
            if len(per) < len(keys):
                continue
            recall = min(per[k]["recall_at_10"] for k in keys)
            cand = {"M": m, "efConstruction": efc, "ef": ef, "recall_at_10": {k: per[k]["recall_at_10"] for k in keys},
                    "min_recall": recall,
                    "cost": round(sum(per[k]["distances_per_query"] * per[k]["dim"] for k in keys)),
                    "distances_per_query": {k: per[k]["distances_per_query"] for k in keys},
                    "p50_ms": {k: per[k]["p50_ms"] for k in keys},
                    "build_s": round(sum(per[k]["build_s"] for k in keys), 2),
                    "meets_target": ef >= TOP_K and recall >= target}
            candidates.append(cand)
            if cand["meets_target"]:
                break  # the graph's smallest passing ef: larger ones only cost more
    ok = [c for c in candidates if c["meets_target"]]
    if not ok:
        return max(candidates, key=lambda c: (c["min_recall"], -c["cost"]))
    floor = min(c["cost"] for c in ok)
    ties = [c for c in ok if c["cost"] <= TIE_BAND * floor]
    return min(ties, key=lambda c: (c["ef"], c["build_s"], c["cost"]))


def faiss_sweep(datasets: list[Dataset], plan: Plan, progress: Progress) -> dict:
    """FAISS HNSW over the grid M x efConstruction x ef on each data set: build time, recall@10, distance
    computations per query and nq=1 latency; the pick (``choose``) over all of them, and over the first alone."""
    import faiss

    rows: list[dict] = []
    grid = [(m, efc) for m in plan.sweep_m for efc in plan.sweep_efc]
    task = progress.add_task(f"HNSW sweep (FAISS, {len(grid)} graphs x {len(datasets)} data sets)",
                             total=len(grid) * len(datasets))
    for ds in datasets:
        singles = _singles(ds)
        for m, efc in grid:
            eng = FaissHnsw(ds, Hnsw(m, efc, TOP_K), chunk=plan.add_chunk)
            eng.load(progress)
            for ef in plan.sweep_ef:
                eng.set_ef(ef)
                faiss.cvar.hnsw_stats.reset()
                found = eng.search(ds.queries)
                ndis = faiss.cvar.hnsw_stats.ndis / len(ds.queries)
                lat = latency(eng.search, singles, plan.ef_lat_n, plan.lat_max_s, progress,
                              f"{ds.key} M={m} efC={efc} ef={ef}", min_n=plan.ef_lat_n)
                rows.append({"dataset": ds.key, "dim": ds.dim, "M": m, "efConstruction": efc, "ef": ef,
                             "build_s": round(eng.insert_s, 2), "recall_at_10": round(recall_at_k(found, ds), 4),
                             "distances_per_query": round(ndis, 1), "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})
            best = max((r for r in rows if r["dataset"] == ds.key and r["M"] == m and r["efConstruction"] == efc),
                       key=lambda r: r["recall_at_10"])
            console.print(f"{_clock()} sweep {ds.key} M={m} efC={efc}: build {eng.insert_s:.1f} s, "
                          f"best recall {best['recall_at_10']:.4f}")
            eng.close()
            gc.collect()
            progress.advance(task)
    progress.remove_task(task)
    keys = [ds.key for ds in datasets]
    pick = choose(rows, keys)
    console.print(f"{_clock()} [bold]sweep pick[/]: M={pick['M']} efC={pick['efConstruction']} ef={pick['ef']} "
                  f"(recall@10 {pick['recall_at_10']}, cost {pick['cost']:,})")
    return {"engine": "faiss_hnsw", "datasets": keys, "rows": rows, "pick": pick,
            "pick_first_only": choose(rows, keys[:1]), "target": RECALL_TARGET, "tie_band": TIE_BAND}


def final_ef(sweep: list[dict], target: float = RECALL_TARGET) -> tuple[int, bool]:
    """The smallest ef whose recall reaches the target (the lowest-latency one on a given graph)."""
    for r in sorted(sweep, key=lambda r: r["ef"]):
        if r["ef"] >= TOP_K and r["recall_at_10"] >= target:
            return r["ef"], True
    return max(r["ef"] for r in sweep), False


# -- the run ----------------------------------------------------------------------------------------------------
class Servers:
    """The run's Milvus servers, each on a folder under the run's temp dir: one for the whole run (``shared``) or
    a fresh one per collection (clean memory figures). Every server is stopped by the ExitStack, also on errors.
    Stopping is ``kill()`` (SIGKILL to its process group, then reaped): the data folder is thrown away, and Milvus
    2.3.5's clean shutdown of a standalone that served a collection often blocks until the launcher's 15 s
    SIGKILL fall-back anyway."""

    def __init__(self, stack: contextlib.ExitStack, root: Path, shared: bool) -> None:
        self.stack, self.root, self.shared = stack, root, shared
        self.shared_server = None

    def start(self, key: str):
        from launchers.milvus import MilvusServer

        if self.shared and self.shared_server is not None:
            return self.shared_server
        srv = MilvusServer(self.root / f"milvus_{key}", startup_timeout_s=180)
        self.stack.callback(srv.kill)
        with console.status(f"starting a Milvus server for {key}"):
            srv.start()
        console.print(f"{_clock()} Milvus server for {key} ready in {srv.last_start_s:.1f} s ({srv.uri})")
        if self.shared:
            self.shared_server = srv
        return srv

    def stop(self, srv) -> None:
        if srv is not None and not self.shared:
            srv.kill()


def _size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def _synthetic_sets(plan: Plan, progress: Progress) -> list[Dataset]:
    """One data set per size in ``plan.synth_sizes``: the largest is generated once, the others are its prefixes
    (``synthetic`` makes a smaller set a prefix of a larger one) with the same queries."""
    db, queries = synthetic(max(plan.synth_sizes), plan.n_queries, plan.n_clusters, progress=progress)
    title = (f"synthetic Gaussian mixture, {plan.n_clusters:,} components (centre + random {SYNTH_SUBSPACE}-d "
             "subspace + noise), L2-normalised")
    return [with_ground_truth(Dataset(f"synthetic_{_size_label(n)}", title, db[:n], queries), progress)
            for n in plan.synth_sizes]


_ENGINE_ORDER = {"faiss_flat": 0, "faiss_hnsw": 1, "milvus_server": 2, "milvus_lite": 4}


def _row_order(datasets: list[str]) -> Callable[[dict], tuple]:
    return lambda r: (datasets.index(r["dataset"]), _ENGINE_ORDER[r["engine"]] + (r["role"] == "tuned" and
                                                                                    r["engine"] == "milvus_server"))


def run(quick: bool = False, lite_1m: bool = False, skip_1m: bool = False) -> dict:
    """Pass 1 (tuning): exact reference and FAISS sweep on the real embeddings, which picks M and efConstruction;
    the Milvus server with the current defaults on the real embeddings; then a Milvus server collection with the
    picked graph for every data set, each swept over ef. The chosen ef is the smallest that reaches the recall
    target on every data set. Pass 2: every engine measured at the chosen parameters."""
    import faiss

    from launchers.milvus import milvus_version

    plan = make_plan(quick, lite_1m, skip_1m)
    t_start = _T0[0] = time.perf_counter()
    result: dict = {"quick": quick, "top_k": TOP_K, "batch_nq": BATCH_NQ, "recall_target": RECALL_TARGET,
                    "plan": asdict(plan), "faiss_version": faiss.__version__,
                    "faiss_threads": faiss.omp_get_max_threads(), "milvus_version": milvus_version(),
                    "current_defaults": CURRENT.as_dict(), "datasets": {}, "engines": [],
                    "lite_1m": 1_000_000 in plan.lite_sizes,
                    "lite_1m_reason": None if 1_000_000 in plan.lite_sizes or quick or skip_1m else LITE_1M_REASON}
    rows: list[dict] = result["engines"]
    real = real_embeddings(plan)  # before the progress display: embedding draws its own bars
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vsearch-bench-")))
        servers = Servers(stack, tmp, plan.shared_server)
        progress = stack.enter_context(make_progress())

        def server_engine(ds: Dataset, hnsw: Hnsw, label: str, tag: str) -> MilvusEngine:
            engine = MilvusEngine(ds, hnsw, (srv := servers.start(ds.key + tag)).uri, srv, label=label,
                                  collection_tag=tag, settle=plan.settle)
            stack.callback(engine.store.close)  # on errors: the client closed before its server stops
            return engine

        def sweep_ef(engine: Engine) -> list[dict]:
            return ef_sweep(engine, plan.sweep_ef, plan.ef_lat_n, plan.lat_max_s, progress)

        # -- pass 1: tuning ---------------------------------------------------------------------------------
        datasets: dict[str, Dataset] = {"real": with_ground_truth(real, progress)}
        for ds in _synthetic_sets(plan, progress):
            datasets[ds.key] = ds
        for key, ds in datasets.items():
            result["datasets"][key] = ds.describe()
        rows.append(_measure_and_close(FaissFlat(real), plan, progress))
        current = None
        if plan.overlap_milvus:  # quick: its index build overlaps the FAISS sweep
            current = server_engine(real, CURRENT, "Milvus server (current defaults)", "_cur")
            current.load(progress)
            current.seal()
        swept = [real, datasets[f"synthetic_{_size_label(min(plan.synth_sizes))}"]]
        sweep = result["sweep"] = faiss_sweep(swept, plan, progress)
        pick = sweep["pick"]
        graph = Hnsw(pick["M"], pick["efConstruction"], pick["ef"])
        same_graph = (graph.m, graph.ef_construction) == (CURRENT.m, CURRENT.ef_construction)
        current = current or server_engine(real, CURRENT, "Milvus server (current defaults)", "_cur")
        tuned: dict[str, MilvusEngine | None] = {key: current if key == "real" and same_graph else None
                                                 for key in datasets}

        def tuned_engine(key: str) -> MilvusEngine:
            """The data set's collection with the picked graph (its server started when first asked for)."""
            if tuned[key] is None:
                tuned[key] = server_engine(datasets[key], graph, "Milvus server", "")
            return tuned[key]

        if plan.overlap_milvus:  # quick: every collection inserted first, so their index builds overlap
            for key in tuned:
                if math.isnan(tuned_engine(key).insert_end):
                    tuned_engine(key).load(progress)
                    tuned_engine(key).seal()
        ef_sweeps: dict[str, list[dict]] = {}

        def sweep_current(e: Engine) -> None:
            ef_sweeps["real_current"] = sweep_ef(e)
            e.set_ef(CURRENT.ef)

        rows.append(measure(current, plan, progress, role="current", before=sweep_current))
        if not same_graph:
            current.close()
            servers.stop(current.server)
        for key in tuned:
            engine = tuned_engine(key)
            if engine is current:
                ef_sweeps[key] = ef_sweeps["real_current"]
                continue
            if math.isnan(engine.insert_end):
                engine.load(progress)
            engine.wait_built(progress)
            ef_sweeps[key] = sweep_ef(engine)
            console.print(f"{_clock()} {key}: Milvus reaches recall@{TOP_K} >= {RECALL_TARGET} from ef="
                          f"{final_ef(ef_sweeps[key])[0]}")
        needed = {key: final_ef(ef_sweeps[key]) for key in tuned}
        chosen = Hnsw(graph.m, graph.ef_construction, max(ef for ef, _ in needed.values()))
        result["milvus_ef_sweep"] = {
            "current": {"dataset": "real", "hnsw": CURRENT.as_dict(), "rows": ef_sweeps["real_current"]},
            "tuned": {key: {"hnsw": chosen.as_dict(), "rows": ef_sweeps[key], "smallest_ef": ef, "reached": ok}
                      for key, (ef, ok) in needed.items()}}
        at_ef = {key: next(r for r in ef_sweeps[key] if r["ef"] == chosen.ef) for key in tuned}
        result["recommended"] = {
            "hnsw_m": chosen.m, "hnsw_ef_construction": chosen.ef_construction, "hnsw_ef": chosen.ef,
            "faiss_pick_ef": graph.ef, "smallest_ef_per_dataset": {key: ef for key, (ef, _) in needed.items()},
            "milvus_recall_at_10": at_ef["real"]["recall_at_10"], "milvus_nq1_p50_ms": at_ef["real"]["p50_ms"],
            "meets_target": bool(pick["meets_target"] and all(ok for _, ok in needed.values()))}
        console.print(f"{_clock()} [bold]recommended[/]: hnsw_m={chosen.m} hnsw_ef_construction="
                      f"{chosen.ef_construction} hnsw_ef={chosen.ef} (smallest ef per data set: "
                      f"{result['recommended']['smallest_ef_per_dataset']})")

        # -- pass 2: every engine at the chosen parameters ---------------------------------------------------
        for key in sorted(tuned, key=lambda k: -datasets[k].n):  # largest first: frees the most memory
            engine = tuned_engine(key)
            engine.label = "Milvus server"
            rows.append(measure(engine, plan, progress, role="tuned", before=lambda e: e.set_ef(chosen.ef)))
            engine.close()
            servers.stop(engine.server)
        for key, ds in datasets.items():
            if key != "real":
                rows.append(_measure_and_close(FaissFlat(ds), plan, progress))
            rows.append(_measure_and_close(FaissHnsw(ds, chosen, chunk=plan.add_chunk), plan, progress, role="tuned"))
            if key == "real" or ds.n in plan.lite_sizes:
                lite = MilvusEngine(ds, chosen, str(tmp / f"lite_{key}" / "bench.db"))
                rows.append(_measure_and_close(lite, plan, progress, role="tuned"))
        rows.sort(key=_row_order(list(datasets)))
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    _print(result)
    console.print(f"written to {write_result(NAME, result)} ({result['wall_s']:.0f} s)")
    return result


def _measure_and_close(engine: Engine, plan: Plan, progress: Progress, role: str | None = None) -> dict:
    try:
        return measure(engine, plan, progress, role=role)
    finally:
        engine.close()
        gc.collect()


# -- report -----------------------------------------------------------------------------------------------------
def _ms(v: float) -> str:
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def _hnsw_text(row: dict) -> str:
    h = row.get("hnsw")
    return f"{h['M']} / {h['efConstruction']} / {h['ef']}" if h else "exact"


def _engine_rows(result: dict) -> Iterator[list[str]]:
    for r in result["engines"]:
        nq64 = r[f"nq{result['batch_nq']}"]
        build = "-" if r["engine"] == "faiss_flat" else f"{r['build_s']:.1f} s" + (" †" if r["build_in_insert"] else "")
        if r.get("first_indexed_s") is not None and r["first_indexed_s"] < r["build_s"] - 0.5:
            build += f" (first {r['first_indexed_s']:.1f} s)"
        yield [r["dataset"], r["label"], _hnsw_text(r), f"{r['rows']:,} x {r['dim']}",
               f"{r['insert_rows_per_s']:,.0f} rows/s ({r['insert_s']:.1f} s)", build,
               f"{_ms(r['nq1']['p50_ms'])} / {_ms(r['nq1']['p99_ms'])}",
               f"{_ms(nq64['p50_ms'])} / {_ms(nq64['p99_ms'])}", f"{r['recall_at_10']:.3f}",
               f"{r['rss_growth_mb']:,.0f} MB"]


ENGINE_HEADER = ["data", "engine", "HNSW M / efC / ef", "rows", "insert", "index build", "nq=1 p50 / p99",
                 "nq=64 p50 / p99", "recall@10", "RSS growth"]


def _print(result: dict) -> None:
    table = Table(title="vector search engines")
    for col in ENGINE_HEADER:
        table.add_column(col)
    for row in _engine_rows(result):
        table.add_row(*row)
    console.print(table)
    rec = result.get("recommended")
    if rec:
        console.print(f"recommended Settings: hnsw_m={rec['hnsw_m']} hnsw_ef_construction={rec['hnsw_ef_construction']}"
                      f" hnsw_ef={rec['hnsw_ef']}")
    for t in targets(result):
        console.print(f"target {t.name}: {t.target}, measured {t.measured}: {'met' if t.met else 'NOT met'}")


def _sweep_table(sweep: dict) -> list[str]:
    keys = sweep["datasets"]
    both = " / ".join(keys)
    lines = [f"| M | efC | build ({both}) | smallest ef >= {sweep['target']} ({both}) | joint ef | recall@10 at it | "
             f"cost (distances x dim) | nq=1 p50 at it |", "|---|---|---|---|---|---|---|---|"]
    pick = sweep["pick"]
    for m, efc in sorted({(r["M"], r["efConstruction"]) for r in sweep["rows"]}):
        g = [r for r in sweep["rows"] if (r["M"], r["efConstruction"]) == (m, efc)]
        builds = " / ".join(f"{next(r['build_s'] for r in g if r['dataset'] == k):.1f} s" for k in keys)
        alone = []
        for k in keys:
            c = choose(g, [k], sweep["target"])
            alone.append(str(c["ef"]) if c["meets_target"] else "none")
        c = choose(g, keys, sweep["target"])
        mark = " **(pick)**" if (m, efc) == (pick["M"], pick["efConstruction"]) else ""
        joint = f"{c['ef']}" if c["meets_target"] else f"none (best at ef {c['ef']})"
        lines.append(f"| {m}{mark} | {efc} | {builds} | {' / '.join(alone)} | {joint} | "
                     + " / ".join(f"{c['recall_at_10'][k]:.3f}" for k in keys) + f" | {c['cost']:,} | "
                     + " / ".join(f"{c['p50_ms'][k] * 1e3:.0f} µs" for k in keys) + " |")
    return lines


def _graph_size_note(result: dict) -> list[str]:
    """Where one FAISS graph over the largest set misses the target at the parameters the Milvus server meets it
    with: Milvus searches each segment's (smaller) graph with the full ef and merges the results."""
    sizes = {key: d["rows"] for key, d in result["datasets"].items()}
    key = max(sizes, key=sizes.get)
    rows = {r["engine"]: r for r in result["engines"] if r["dataset"] == key and r["role"] == "tuned"}
    faiss_row, milvus_row = rows.get("faiss_hnsw"), rows.get("milvus_server")
    if not faiss_row or not milvus_row or faiss_row["recall_at_10"] >= result["recall_target"]:
        return []
    segs = milvus_row.get("segments")
    return ["", f"At {sizes[key]:,} rows one FAISS graph with the same M / efConstruction / ef reaches recall@"
            f"{result['top_k']} {faiss_row['recall_at_10']:.3f}, the Milvus server {milvus_row['recall_at_10']:.3f}: "
            f"Milvus searched {segs if segs else 'several'} segment graphs, each with the full ef, and merged the "
            f"results. A segment holds at most {SEGMENT_MB} MB of rows (Milvus's default; about "
            + ", ".join(f"{SEGMENT_MB * 2**20 // (4 * d) / 1000:.0f}k at {d}-d"
                        for d in sorted({v["dim"] for v in result["datasets"].values()}, reverse=True))
            + "), so collections whose segments are larger graphs than these need a larger ef (or M) than "
            "recommended here."]


def markdown(result: dict) -> str:
    ds = result["datasets"]
    plan = result["plan"]
    k, nq = result["top_k"], result["batch_nq"]
    cur = result["current_defaults"]
    lines = ["## Vector search engines and HNSW tuning (`benchmarks/vector_search.py`)", ""]
    if result["quick"]:
        lines += ["_Quick smoke run on small sets: the figures only show that the benchmark works._", ""]
    lines += [
        f"Engines: the Milvus {result['milvus_version']} server (the product default, driven through "
        "`MilvusVectorStore` with `Settings` overrides, so the product's upserts and search parameters are what is "
        "timed; metadata returned as the gateway asks for it), Milvus Lite (the same store on a `.db` path, in this "
        f"process), FAISS {result['faiss_version']} HNSW (`IndexHNSWFlat`, inner product on unit vectors) and FAISS "
        f"flat (exact). {result['faiss_threads']} FAISS threads. Insert = upserts of {UPSERT_ROWS:,} rows (Milvus) or "
        "adds (FAISS), after the empty collection or index was made; index build = for the Milvus server, the time "
        "from the last insert until a flush has sealed the segments, the index is built, only indexed segments "
        f"answer and a search returns{'' if plan['shared_server'] else ' (a fresh server per collection)'}"
        + ("; then Milvus keeps reorganising on its own: the product's upserts write a delete for every row "
           "(Milvus upserts are delete + insert), so every segment is compacted once, small segments are merged, and "
           "each result is indexed and handed off again (the searches change each time): the build ends when the "
           f"final segment set began answering, counted as final once unchanged for {SETTLE_QUIET_S:.0f} s "
           "(Milvus compacts every 60 s); \"first\" = when an index first answered" if plan.get("settle") else
           " (no wait for the compactions that the product's upserts cause: in this run Milvus may compact and "
           "re-index during the measurements)") + "; "
        "† = the graph is built during the inserts "
        "(FAISS HNSW's add, Milvus Lite's per-flush indexing), the column is what remained after them. "
        f"Search: p50/p99 of single searches at nq=1 and nq={nq}, top_k {k}. Recall@{k}: all queries against exact "
        f"numpy ground truth; a returned id counts when its exact score reaches the true {k}th score (minus "
        f"{TIE_EPS:g}), so exact ties are not misses. RSS growth: the resident memory gained by the process "
        "holding the index (the Milvus server process via psutil; this process for FAISS and Lite), from before "
        "the inserts to after the searches. The product searches with ef = max(hnsw_ef, top_k); FAISS is given the "
        "same.",
        "",
        "Data:",
        "",
    ]
    for key, d in ds.items():
        lines.append(f"- `{key}`: {d['title']}; {d['rows']:,} x {d['dim']}, {d['queries']:,} queries.")
    lines += ["", f"Synthetic vectors are clustered on purpose: isotropic random vectors in {SYNTH_DIM}-d have nearly "
              "equal distances, so their nearest neighbours are noise and HNSW recall collapses; the mixture's "
              f"{SYNTH_SUBSPACE}-d components imitate the low intrinsic dimension of real embeddings.", ""]
    if plan["overlap_milvus"]:
        lines += ["In this quick run one Milvus server held every collection and they were all inserted before any "
                  "was measured, so their index builds overlapped each other and the FAISS rows, and the server's "
                  "RSS growth is not per collection.", ""]
    lines += ["| " + " | ".join(ENGINE_HEADER) + " |", "|" + "---|" * len(ENGINE_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _engine_rows(result)]
    lines += _graph_size_note(result)
    sweep = result.get("sweep")
    if sweep:
        p, alone = sweep["pick"], sweep["pick_first_only"]
        grid = sweep["rows"]
        lines += ["", "### HNSW tuning", "",
                  f"FAISS sweep on {' and '.join(f'`{k}`' for k in sweep['datasets'])} over M "
                  f"{sorted({r['M'] for r in grid})}, efConstruction {sorted({r['efConstruction'] for r in grid})} and "
                  f"ef {sorted({r['ef'] for r in grid})}. Rule: for each graph, the smallest ef (>= top_k) with "
                  f"recall@{k} >= {sweep['target']} on every swept data set (the product has one `hnsw_ef` for all "
                  "models); its search cost = distance computations per query x dimension, summed over the data sets "
                  "(what an HNSW search's time is made of, and deterministic where timings on a shared machine are "
                  f"not; the measured p50 follows it). The lowest cost wins; costs within "
                  f"{(sweep['tie_band'] - 1) * 100:.0f} % of it tie, and ties go to the graph that needs the smallest "
                  "ef (the better-connected graph), then to the fastest build.",
                  ""]
        lines += _sweep_table(sweep)
        lines += ["", f"FAISS pick: M={p['M']}, efConstruction={p['efConstruction']}, ef={p['ef']} (recall@{k} "
                  + ", ".join(f"{key} {v:.3f}" for key, v in p["recall_at_10"].items()) + ")"
                  + ("" if p["meets_target"] else f"; no setting reached {sweep['target']}") + ". "
                  f"On `{sweep['datasets'][0]}` alone the rule would pick M={alone['M']}, "
                  f"efConstruction={alone['efConstruction']}, ef={alone['ef']}."]
    ms = result.get("milvus_ef_sweep")
    if ms:
        c, tuned = ms["current"]["hnsw"], ms["tuned"]
        t = next(iter(tuned.values()))["hnsw"]
        keys = list(tuned)
        lines += ["", f"Search ef on the Milvus server: recall@{k} / nq=1 p50 for the real embeddings on the current "
                  f"graph (M={c['M']}, efConstruction={c['efConstruction']}) and for every data set on the picked "
                  f"graph (M={t['M']}, efConstruction={t['efConstruction']}):", "",
                  "| ef | real, current graph | " + " | ".join(f"{key}, picked graph" for key in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        by_key = {key: {r["ef"]: r for r in v["rows"]} for key, v in tuned.items()}

        def cell(r: dict | None) -> str:
            if r is None:
                return "-"
            text = f"{r['recall_at_10']:.3f} / {_ms(r['p50_ms'])}"
            return f"**{text}**" if r["recall_at_10"] >= result["recall_target"] else text

        for r in ms["current"]["rows"]:
            lines.append(f"| {r['ef']} | {cell(r)} | " + " | ".join(cell(by_key[key].get(r["ef"])) for key in keys)
                         + " |")
        lines += ["", f"Bold: recall@{k} >= {result['recall_target']}. Smallest such ef per data set (picked graph): "
                  + ", ".join(f"{key} {v['smallest_ef']}" + ("" if v["reached"] else " (not reached)")
                              for key, v in tuned.items()) + "."]
    rec = result.get("recommended")
    if rec:
        lines += ["", f"**Recommended `Settings` defaults: `hnsw_m={rec['hnsw_m']}`, "
                  f"`hnsw_ef_construction={rec['hnsw_ef_construction']}`, `hnsw_ef={rec['hnsw_ef']}`** (the "
                  f"defaults when this ran: {cur['M']} / {cur['efConstruction']} / {cur['ef']}; {_adopted(rec)}). "
                  "M and efConstruction are the FAISS pick on "
                  f"{' and '.join(f'`{k}`' for k in result['sweep']['datasets'])}; ef is the smallest at which the "
                  f"Milvus server reaches recall@{k} >= "
                  f"{result['recall_target']} on every data set (FAISS's own pick was ef={rec['faiss_pick_ef']}; on "
                  f"the real embeddings the Milvus server has recall {rec['milvus_recall_at_10']:.3f} and nq=1 p50 "
                  f"{_ms(rec['milvus_nq1_p50_ms'])} there). The product searches with ef = max(hnsw_ef, top_k), so a "
                  "larger top_k searches with a larger ef and a higher recall; Milvus itself refuses ef < top_k."
                  + ("" if rec["meets_target"] else " The target was not reached in the swept range.")]
    if result.get("lite_1m_reason"):  # the run left Milvus Lite out at 1M: say why (the text, not a figure)
        lines += ["", LITE_1M_REASON]
    verdicts = targets(result)
    if verdicts:
        lines += ["", "| target | goal | measured | met |", "|---|---|---|---|"]
        lines += [f"| {t.name} | {t.target} | {t.measured} | {'yes' if t.met else 'no'} |" for t in verdicts]
    return "\n".join(lines) + "\n"


def _adopted(rec: dict) -> str:
    """Whether the product's defaults now are the recommended ones (read from Settings, not from the result)."""
    now = DEFAULTS
    if all(now[k] == rec[k] for k in now):
        return "these are now the product's defaults in `server/settings.py`"
    return (f"the product's defaults are now {now['hnsw_m']} / {now['hnsw_ef_construction']} / {now['hnsw_ef']}, "
            "not the recommended ones")


def targets(result: dict) -> list[Target]:
    """ANN recall@10 >= 0.95 on the Milvus server at the chosen parameters: real embeddings and the largest
    synthetic set."""
    out = []
    synth = [key for key in result["datasets"] if key.startswith("synthetic")]
    keys = ["real"] + ([max(synth, key=lambda s: result["datasets"][s]["rows"])] if synth else [])
    for key in keys:
        row = next((r for r in result["engines"] if r["dataset"] == key and r["engine"] == "milvus_server"
                    and r["role"] == "tuned"), None)
        if row is None:
            continue
        out.append(Target(f"ANN recall@{result['top_k']}, Milvus server, {key} ({row['rows']:,} x {row['dim']}), "
                          f"HNSW M / efC / ef = {_hnsw_text(row)}", f">= {result['recall_target']}",
                          f"{row['recall_at_10']:.3f}", row["recall_at_10"] >= result["recall_target"]))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets, small sweep (a smoke run, under 90 s)")
    parser.add_argument("--lite-1m", action="store_true", help="also run Milvus Lite at 1M")
    parser.add_argument("--skip-1m", action="store_true", help="leave out the 1M synthetic rows")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl+C, so every Milvus server this run started is stopped on the way out.
    def _terminate(signum, frame):
        console.print(f"{_clock()} [red]signal {signum}: stopping the Milvus servers and exiting[/]")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    run(args.quick, lite_1m=args.lite_1m, skip_1m=args.skip_1m)
