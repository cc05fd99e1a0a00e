"""The real data set: embeddings of our Fashion-MNIST DINO ViT (``MODEL``, 128-d) of the 60k train images plus 40k
seeded strong copies of train images (``extractors.copies``, resized to 28x28 like the gateway does); queries are
test images. The full set is computed once and cached as .npy in ``CACHE`` (gitignored)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from rich.progress import track

from benchmarks.common import CACHE as BENCH_CACHE
from benchmarks.vector_search.data import Dataset, normalise
from benchmarks.vector_search.log import console
from benchmarks.vector_search.plan import SEED, Plan

MODEL = "dino_vit_femto_p7_fmnist"
CACHE = BENCH_CACHE / "vector_search"


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
    db = normalise(np.concatenate([train, copies]).astype(np.float32))
    return Dataset("real", title, db, normalise(np.array(queries, dtype=np.float32)))

