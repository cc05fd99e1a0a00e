"""The index the gateway searches: reused when the gateway already holds enough items, else built with
``vsearch index`` as a user would; then waited on until Milvus serves it settled (``benchmarks.milvus_settle``)."""

from __future__ import annotations

import time

from benchmarks import vsearch_index
from benchmarks.common import console
from benchmarks.gateway_rpc import stored_items
from benchmarks.gateway_search.plan import INDEX_BATCH_SIZE
from benchmarks.milvus_settle import MIN_INDEXED_ROWS, Look, look_server, server_client, wait_settled


def wait_indexed(milvus_uri: str, model: str, quiet_s: float, timeout_s: float = 900) -> float:
    """Seconds until every segment of the model's collection is sealed and HNSW-indexed (the gateway flushes after
    a bulk write; Milvus then builds the index in the background) and the set of segments Milvus serves is the set
    it stores and has not changed for ``quiet_s``."""
    from server.vector_store.milvus import collection_name

    name = collection_name(model)
    with server_client(milvus_uri) as client, \
            console.status("waiting for Milvus to seal and index the collection") as status:
        t0 = time.perf_counter()

        def show(seen: Look, quiet: float) -> None:
            status.update(f"waiting for Milvus: {len(seen.loaded)} segments served, {len(seen.stored)} stored, "
                          + (f"unchanged for {quiet:.0f} of {quiet_s:.0f} s" if seen.ok else "not all indexed"))

        settled = wait_settled(lambda: look_server(client, name, small_rows=MIN_INDEXED_ROWS), quiet_s, timeout_s,
                               f"the collection of {model}", show)
    return settled.began - t0


def prepare_index(address: str, milvus_uri: str, model: str, n_index: int, quiet_s: float) -> dict:
    """``n_index`` items of Fashion-MNIST in the model's collection, settled; what was done and how long it took."""
    have = stored_items(address, model)
    if have >= n_index:
        out = {"indexed": have, "reused": True}
    else:
        run = vsearch_index.index(address, model, n_index, batch_size=INDEX_BATCH_SIZE)
        out = {**run.summary, "reused": False}
    out["seconds_until_indexed"] = round(wait_indexed(milvus_uri, model, quiet_s), 1)
    out["settled_for_s"] = quiet_s
    return out
