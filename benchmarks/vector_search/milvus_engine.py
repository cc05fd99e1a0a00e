"""The Milvus engines: ``MilvusVectorStore`` (the product's own code path: its upsert batching, its search parameters
``ef = max(hnsw_ef, top_k)``) on a Milvus server or on a Milvus Lite ``.db`` path, and the run's Milvus servers."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.progress import Progress

from benchmarks.common import MILVUS_SETTLE_S
from benchmarks.milvus_settle import Look, growing_rows, look_lite, look_server, server_client, wait_settled
from benchmarks.vector_search.data import Dataset
from benchmarks.vector_search.engines import Engine
from benchmarks.vector_search.log import clock, console
from benchmarks.vector_search.plan import TOP_K, Hnsw
from server.settings import Settings

# Without settling, one unchanged poll after the hand-off to indexed segments is enough.
HANDOFF_QUIET_S = 0.9


class MilvusEngine(Engine):
    """``MilvusVectorStore`` with ``settings`` plus the engine's HNSW parameters, on a Milvus server URI or a Milvus
    Lite ``.db`` path."""

    def __init__(self, ds: Dataset, hnsw: Hnsw, uri: str, settings: Settings, server=None, label: str | None = None,
                 collection_tag: str = "", settle: bool = True, timeout_s: float = 3600) -> None:
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
        self.timeout_s = timeout_s

    def _pid(self) -> int:
        return self.server.pid if self.server is not None else super()._pid()

    def _create(self) -> None:
        self.store.ensure_collection(self.model, self.ds.dim)  # created with its HNSW index spec, and loaded

    def _insert(self, progress: Progress) -> None:
        ids = [str(i) for i in range(self.ds.n)]
        rows = self.store.settings.milvus_write_batch_rows  # one upsert per message the store would send anyway
        task = progress.add_task(f"{self.label}: upsert {self.ds.n:,} rows", total=self.ds.n)
        for s in range(0, self.ds.n, rows):
            block = self.ds.db[s:s + rows]
            self.store.upsert(self.model, ids[s:s + len(block)], block)
            progress.advance(task, len(block))
        progress.remove_task(task)

    def _wait(self, progress: Progress) -> float | None:
        """Until the index covers every row and only indexed sealed segments answer; with ``settle``, until Milvus
        has also stopped reorganising them (``benchmarks.milvus_settle``). Returns when that final state began
        (perf_counter); ``first_served_s`` is when an index first answered alone. Milvus indexes sealed segments
        only, so the inserts are flushed first; the query node's metrics tell when the growing segments (searched
        by brute force until the hand-off) are gone."""
        from server.vector_store.milvus import collection_name

        self.seal()
        task = progress.add_task(f"{self.label}: index build", total=self.ds.n)

        def show(seen: Look, quiet: float) -> None:
            indexed = seen.indexed_rows or 0
            progress.update(task, completed=min(indexed, self.ds.n), description=(
                f"{self.label}: index build" if indexed < self.ds.n else
                f"{self.label}: {len(seen.loaded)} indexed segments, settled for {quiet:.0f} s" if seen.ok else
                f"{self.label}: loading indexed segments ({len(seen.stored - seen.loaded)} to load, "
                f"{len(seen.loaded - seen.stored)} to release, {seen.pending} rows or segments unindexed)"))

        quiet_s = MILVUS_SETTLE_S if self.settle else HANDOFF_QUIET_S
        try:
            if self.lite:
                settled = wait_settled(lambda: look_lite(self.store, self.model, self.ds.n), quiet_s, self.timeout_s,
                                       self.label, show)
                return settled.began
            name = collection_name(self.model)
            with server_client(self.uri) as client:
                collection_id = str(client.describe_collection(name)["collection_id"])
                metrics_port = self.server.ports["metrics_port"]
                settled = wait_settled(
                    lambda: look_server(client, name, self.ds.n, match_stored=self.settle,
                                        growing_rows=lambda: growing_rows(metrics_port, collection_id)),
                    quiet_s, self.timeout_s, self.label, show)
            self.first_served_s = settled.first_ok - self.insert_end
            self.segments = len(settled.look.loaded)
            return settled.began
        finally:
            progress.remove_task(task)

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
    """The run's Milvus servers, each on a folder under the run's temp dir: one for the whole run (``shared``) or
    a fresh one per collection (clean memory figures). Every server is stopped by the ExitStack, also on errors.
    Stopping is ``kill()`` (SIGKILL to its process group, then reaped): the data folder is thrown away, and Milvus
    2.3.5's clean shutdown of a standalone that served a collection often blocks until the launcher's 15 s
    SIGKILL fall-back anyway."""

    def __init__(self, stack: contextlib.ExitStack, root: Path, shared: bool, startup_timeout_s: float = 180) -> None:
        self.stack, self.root, self.shared = stack, root, shared
        self.startup_timeout_s = startup_timeout_s
        self.shared_server = None

    def start(self, key: str):
        from launchers.milvus import MilvusServer

        if self.shared and self.shared_server is not None:
            return self.shared_server
        srv = MilvusServer(self.root / f"milvus_{key}", startup_timeout_s=self.startup_timeout_s)
        self.stack.callback(srv.kill)
        with console.status(f"starting a Milvus server for {key}"):
            srv.start()
        console.print(f"{clock()} Milvus server for {key} ready in {srv.last_start_s:.1f} s ({srv.uri})")
        if self.shared:
            self.shared_server = srv
        return srv

    def stop(self, srv) -> None:
        if srv is not None and not self.shared:
            srv.kill()
