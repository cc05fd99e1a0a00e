"""The same retrieval measured two ways: offline (torch embeddings, exact numpy search) and end to end
through the running stack (gateway -> Triton -> Milvus HNSW). The figures must agree; the overlap of the
two top-10 lists is the recall@10 of the ANN index used in serving."""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from clients.indexing import index_images
from clients.sdk import SearchClient, search_request
from extractors.datasets import load_fashion_mnist
from extractors.knn_report import embed_uint8
from extractors.training import dataset_to_uint8
from launchers.ports import free_port
from launchers.stack import Stack
from server.settings import Settings

console = Console()


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def offline_topk(model: str, db_x: torch.Tensor, q_x: torch.Tensor, k: int) -> np.ndarray:
    db, q = embed_uint8(model, db_x), embed_uint8(model, q_x)
    return (q @ db.T).topk(k, dim=1).indices.numpy()


def run(model: str | None = None, n_db: int = 10000, n_queries: int = 1000, k: int = 10,
        out: Path = Path("reports/comparison/serving_check.json")) -> dict:
    settings = Settings()
    model = model or settings.models[0]
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    db_idx, q_idx = np.arange(n_db), np.arange(n_queries)
    db_ids = [train.ids[i] for i in db_idx]
    y_db, y_q = train.labels[db_idx], test.labels[q_idx]

    exact = offline_topk(model, dataset_to_uint8(train.subset(db_idx)), dataset_to_uint8(test.subset(q_idx)), k)
    offline_ids = [[db_ids[j] for j in row] for row in exact]

    served_ids: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp, \
            Stack(Settings(milvus_data_dir=Path(tmp) / "milvus"), gateway_port=free_port()) as stack, \
            SearchClient(stack.address) as client:
        summary = index_images(client, None, "fashion-mnist", model, n_db, batch_size=128)
        t0 = time.perf_counter()
        for start in track(range(0, n_queries, 32), description="queries through the gateway"):
            reqs = [search_request(model, image=_png(test.pil(i)), top_k=k)
                    for i in range(start, min(start + 32, n_queries))]
            served_ids += [[h.id for h in r.hits] for r in client.search_batch(reqs)]
        query_s = time.perf_counter() - t0
    label_of = dict(zip(db_ids, y_db, strict=True))

    def metrics(ids: list[list[str]]) -> dict:
        labels = np.array([[label_of[i] for i in row] for row in ids])
        return {"recall@1": float((labels[:, 0] == y_q).mean()),
                f"precision@{k}": float((labels == y_q[:, None]).mean())}

    result = {"model": model, "n_db": n_db, "n_queries": n_queries, "indexed_per_s": summary["images_per_s"],
              "gateway_queries_per_s": round(n_queries / query_s, 1),
              "offline_exact": metrics(offline_ids), "gateway_hnsw": metrics(served_ids),
              f"ann_recall@{k}": float(np.mean([len(set(a) & set(b)) / k
                                                for a, b in zip(offline_ids, served_ids, strict=True)])),
              "hnsw": {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction, "ef": settings.hnsw_ef}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(result)
    return result


if __name__ == "__main__":
    run()
