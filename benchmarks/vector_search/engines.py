"""The indexes under test: ``Engine``; FAISS flat (exact, the reference) and HNSW (inner product on unit vectors);
``MilvusVectorStore`` (the product's own code path: its upsert batching, its search ef) on a Milvus server or a Milvus
Lite ``.db`` path; and the run's Milvus servers (``Servers``)."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

from benchmarks.common import MILVUS_SETTLE_S, console, step
from benchmarks.milvus_settle import Look, growing_rows, look_lite, look_server, server_client, wait_settled
from benchmarks.vector_search.data import Dataset
from benchmarks.vector_search.plan import TOP_K, Hnsw
from server.settings import Settings

# Without settling, one unchanged poll after the hand-off to indexed segments is enough.
HANDOFF_QUIET_S = 0.9
WAIT_TIMEOUT_S = 3600  # an index build at 1M rows takes about 10 minutes on 2 cores


class Engine:
    """One index under test. ``load`` makes it (``_create``, not timed as inserting) and inserts every row
    (``_insert``); ``wait_built`` returns once it searches with its index (``_wait``); ``search`` gives ids
    [nq, TOP_K] (-1 padded); ``set_ef`` changes the search ef; ``close`` frees it."""

    kind = ""
    label = ""
    builds_on_insert = False  # the graph is built inside the inserts (FAISS HNSW, Milvus Lite)

    def __init__(self, ds: Dataset, hnsw: Hnsw | None) -> None:
        self.ds, self.hnsw = ds, hnsw
        self.create_s = self.insert_s = self.insert_end = self.build_s = math.nan
        self.first_served_s = math.nan  # Milvus server: first time only indexed segments answered
        self.segments: int | None = None  # Milvus server: indexed segments answering once built
        self.rss_before = 0

    def pid(self) -> int:
        """The process holding the index."""
        return os.getpid()

    def rss(self) -> int:
        """Resident memory of the process holding the index and its children, bytes."""
        p = psutil.Process(self.pid())
        total = 0
        for q in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += q.memory_info().rss
        return total

    def load(self) -> None:
        self.rss_before = self.rss()
        t0 = time.perf_counter()
        self._create()
        self.create_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._insert()
        self.insert_end = time.perf_counter()
        self.insert_s = self.insert_end - t0

    def wait_built(self) -> None:
        ready = self._wait()
        self.search(self.ds.queries[:1])
        self.build_s = (ready if ready is not None else time.perf_counter()) - self.insert_end

    def _wait(self) -> float | None:
        """Until the index answers; returns when it began to (perf_counter), or None for now."""
        return None


class FaissFlat(Engine):
    kind, label = "faiss_flat", "FAISS flat (exact)"

    def __init__(self, ds: Dataset, hnsw: Hnsw | None = None, chunk: int = 100_000) -> None:
        super().__init__(ds, hnsw)
        self.chunk, self.index = chunk, None

    def _create(self) -> None:
        import faiss

        self.index = faiss.IndexFlatIP(self.ds.dim)

    def _insert(self) -> None:
        with step(f"{self.label}: add", self.ds.n) as update:
            for s in range(0, self.ds.n, self.chunk):
                self.index.add(block := self.ds.db[s:s + self.chunk])
                update(advance=len(block))

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q, TOP_K)[1]

    def close(self) -> None:
        self.index = None


class FaissHnsw(FaissFlat):
    """The same adds and searches as flat, on an ``IndexHNSWFlat`` (the graph is built inside the adds)."""

    kind, label = "faiss_hnsw", "FAISS HNSW"
    builds_on_insert = True

    def _create(self) -> None:
        import faiss

        self.index = faiss.IndexHNSWFlat(self.ds.dim, self.hnsw.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.hnsw.ef_construction
        self.set_ef(self.hnsw.ef)

    def set_ef(self, ef: int) -> None:
        self.hnsw = replace(self.hnsw, ef=ef)
        self.index.hnsw.efSearch = max(ef, TOP_K)  # as the product: ef = max(hnsw_ef, top_k)


class MilvusEngine(Engine):
    """``MilvusVectorStore`` with ``settings`` and the engine's HNSW parameters, on a server URI or a Lite path."""

    def __init__(self, ds: Dataset, hnsw: Hnsw, uri: str, settings: Settings, server=None, label: str | None = None,
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
        self.store = MilvusVectorStore(uri, hnsw.applied(settings), timeout_s=300, load_timeout_s=1200)
        self.uri = uri
        self.sealed = False
        self.settle = settle and not self.lite

    def pid(self) -> int:
        return self.server.pid if self.server is not None else super().pid()

    def _create(self) -> None:
        self.store.ensure_collection(self.model, self.ds.dim)  # created with its HNSW index spec, and loaded

    def _insert(self) -> None:
        ids = [str(i) for i in range(self.ds.n)]
        rows = self.store.settings.milvus_write_batch_rows  # one upsert per message the store would send anyway
        with step(f"{self.label}: upsert {self.ds.n:,} rows", self.ds.n) as update:
            for s in range(0, self.ds.n, rows):
                self.store.upsert(self.model, ids[s:s + rows], block := self.ds.db[s:s + rows])
                update(advance=len(block))

    def _wait(self) -> float | None:
        """Until the index covers every row and only indexed sealed segments answer (the query node's metrics tell when
        the brute-forced growing ones are gone); with ``settle``, until Milvus has stopped reorganising them too.
        Returns when that final state began; ``first_served_s`` is when an index first answered alone."""
        from server.vector_store.milvus import collection_name

        self.seal()
        quiet_s = MILVUS_SETTLE_S if self.settle else HANDOFF_QUIET_S
        with step(f"{self.label}: index build", self.ds.n) as update:

            def show(seen: Look, quiet: float) -> None:
                indexed = seen.indexed_rows or 0
                update(completed=min(indexed, self.ds.n), description=(
                    f"{self.label}: index build" if indexed < self.ds.n else
                    f"{self.label}: {len(seen.loaded)} indexed segments, settled for {quiet:.0f} s" if seen.ok else
                    f"{self.label}: loading indexed segments ({len(seen.stored - seen.loaded)} to load, "
                    f"{len(seen.loaded - seen.stored)} to release, {seen.pending} rows or segments unindexed)"))

            if self.lite:
                return wait_settled(lambda: look_lite(self.store, self.model, self.ds.n), quiet_s, WAIT_TIMEOUT_S,
                                    self.label, show).began
            name = collection_name(self.model)
            with server_client(self.uri) as client:
                collection_id = str(client.describe_collection(name)["collection_id"])
                metrics_port = self.server.ports["metrics_port"]
                settled = wait_settled(
                    lambda: look_server(client, name, self.ds.n, match_stored=self.settle,
                                        growing_rows=lambda: growing_rows(metrics_port, collection_id)),
                    quiet_s, WAIT_TIMEOUT_S, self.label, show)
        self.first_served_s = settled.first_ok - self.insert_end
        self.segments = len(settled.look.loaded)
        return settled.began

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


class Servers:
    """The run's Milvus servers: one for the whole run (``shared``) or a fresh one per collection (clean memory
    figures), stopped by the ExitStack, also on errors. Stopping is ``kill()``: the data folder is thrown away, and
    Milvus 2.3.5's clean shutdown often blocks until the launcher's 15 s SIGKILL fall-back anyway."""

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
        console.log(f"Milvus server for {key} ready in {srv.last_start_s:.1f} s ({srv.uri})")
        if self.shared:
            self.shared_server = srv
        return srv

    def stop(self, srv) -> None:
        if srv is not None and not self.shared:
            srv.kill()
