"""The data sets: ``Dataset`` (rows, queries and the exact k-th score per query), exact ground truth, tie-aware
recall, and the two kinds of data:

- synthetic: a seeded Gaussian mixture in 384-d (each component a random centre plus a random 16-d subspace plus a
  little isotropic noise), L2-normalised. Isotropic random vectors are deliberately not used: in 384-d all their
  distances are nearly equal, so "nearest neighbours" are noise and HNSW recall collapses (0.13-0.36 in the shared
  notes); real embeddings have a low intrinsic dimension, which is what the mixture imitates.
- real: embeddings (the served descriptor) of our Fashion-MNIST DINO ViT (``REAL_MODEL``) of the train images plus
  seeded strong copies of train images (resized to 28x28 like the gateway does); queries are test images. The full
  set is computed once and cached as .npy in ``REAL_CACHE`` (gitignored).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import track

from benchmarks.common import CACHE, console, step
from benchmarks.vector_search.plan import SEED, TIE_EPS, TOP_K, Plan

SYNTH_DIM = 384
SYNTH_SUBSPACE = 16
SYNTH_SPREAD = 0.6  # norm of a point's offset inside its component's subspace (centres have norm ~1)
SYNTH_NOISE = 0.1  # norm of the isotropic noise
SYNTH_BLOCK = 100_000  # rows generated per seeded block: the 100k set is the first block of the 1M set
REAL_MODEL = "dino_vit_femto_p7_fmnist"
REAL_CACHE = CACHE / "vector_search"


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


def normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def with_ground_truth(ds: Dataset, chunk: int = 65536) -> Dataset:
    """``ds`` with the exact k-th score of every query (inner product = cosine on unit rows), numpy only."""
    best = np.full((len(ds.queries), TOP_K), -np.inf, np.float32)
    with step(f"exact ground truth ({ds.n:,} rows)", ds.n) as update:
        for start in range(0, ds.n, chunk):
            sims = ds.queries @ ds.db[start:start + chunk].T
            best = -np.partition(-np.concatenate([best, sims], axis=1), TOP_K - 1, axis=1)[:, :TOP_K]
            update(advance=sims.shape[1])
    ds.gt_kth = best.min(axis=1)
    return ds


def recall_at_k(found: np.ndarray, ds: Dataset, k: int = TOP_K) -> float:
    """Mean recall@k of ``found`` ([Q, >=k] ids, -1 for none) against the exact neighbours, tie-aware: a returned
    id counts when its exact score is at least the true k-th score (minus TIE_EPS)."""
    hits = 0
    for i in range(len(found)):
        ids = np.unique(found[i, :k][found[i, :k] >= 0])
        if len(ids):
            scores = ds.db[ids] @ ds.queries[i]
            hits += int((scores >= ds.gt_kth[i] - TIE_EPS).sum())
    return hits / (len(found) * k)


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
    return normalise(x)


def synthetic(n: int, n_queries: int, n_clusters: int, dim: int = SYNTH_DIM,
              seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` database rows and ``n_queries`` queries of the seeded mixture. Rows come in seeded blocks of 100k, so a
    smaller set is a prefix of a larger one."""
    centres, bases, weights = _mixture(dim, n_clusters, seed)
    db = np.empty((n, dim), np.float32)
    with step(f"generate {n:,} x {dim} mixture", n) as update:
        for b, start in enumerate(range(0, n, SYNTH_BLOCK)):
            m = min(SYNTH_BLOCK, n - start)
            db[start:start + m] = _mixture_draw(np.random.default_rng([seed, 1, b]), SYNTH_BLOCK, centres, bases,
                                                weights)[:m]
            update(advance=m)
    return db, _mixture_draw(np.random.default_rng([seed, 2]), n_queries, centres, bases, weights)


def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def synthetic_sets(plan: Plan) -> list[Dataset]:
    """One data set per size in ``plan.synth_sizes``, all prefixes of the largest, with the same queries."""
    db, queries = synthetic(max(plan.synth_sizes), plan.n_queries, plan.n_clusters)
    title = (f"synthetic Gaussian mixture, {plan.n_clusters:,} components (centre + random {SYNTH_SUBSPACE}-d "
             "subspace + noise), L2-normalised")
    return [with_ground_truth(Dataset(f"synthetic_{size_label(n)}", title, db[:n], queries)) for n in plan.synth_sizes]


def _weights_fingerprint() -> str:
    from extractors.registry import get_spec

    spec = get_spec(REAL_MODEL)  # the weights and the descriptor's whitening decide the embeddings
    paths = [p for p in (spec.weights(), spec.whitening() if spec.whitening else None) if p and Path(p).exists()]
    if not paths:
        return "none"
    return hashlib.sha256(b"".join(Path(p).read_bytes() for p in paths)).hexdigest()[:16]


def _copy_pixels(ds, indices: range) -> np.ndarray:
    """uint8 [N, 3, 28, 28] of one seeded strong copy per train image, preprocessed like the gateway does."""
    from extractors.copies import CopyConfig, copy_seed, make_copy
    from server.imaging import to_model_input

    cfg = CopyConfig.strong()
    out = np.empty((len(indices), 3, 28, 28), np.uint8)
    for j, i in enumerate(track(indices, description=f"{len(indices):,} seeded copies", console=console)):
        img, _ = make_copy(ds.pil(i), np.random.default_rng(copy_seed(SEED, i, 0)), cfg)
        out[j] = to_model_input(img, 28)
    return out


def _embed(pixels: np.ndarray, label: str) -> np.ndarray:
    import torch

    from extractors.knn_report import embed_uint8

    with torch.inference_mode():
        return embed_uint8(REAL_MODEL, torch.from_numpy(pixels), label=label).numpy().astype(np.float32)


def real_embeddings(plan: Plan) -> Dataset:
    """The real set and its queries. The full set is computed once and cached; quick mode slices the cache when it
    exists, else embeds its small subset in memory."""
    from extractors.datasets import load_fashion_mnist
    from extractors.training import dataset_to_uint8

    n_train_all, n_copies_all = 60_000, 40_000
    files = {k: REAL_CACHE / f"fmnist_{REAL_MODEL}_{k}.npy" for k in ("train", "copies", "test")}
    meta_path = REAL_CACHE / f"fmnist_{REAL_MODEL}_meta.json"
    meta = {"model": REAL_MODEL, "weights": _weights_fingerprint(), "train": n_train_all, "copies": n_copies_all,
            "copy_preset": "strong", "seed": SEED}
    cached = meta_path.exists() and json.loads(meta_path.read_text()) == meta and all(p.exists() for p in
                                                                                         files.values())
    test_order = np.random.default_rng([SEED, 3]).permutation(10_000)[:plan.n_queries]
    title = (f"Fashion-MNIST {REAL_MODEL} embeddings: {plan.real_train:,} train images + {plan.real_copies:,} seeded "
             "strong copies of train images; queries are test images")
    if cached:
        train = np.load(files["train"], mmap_mode="r")[:plan.real_train]
        copies = np.load(files["copies"], mmap_mode="r")[:plan.real_copies]
        queries = np.load(files["test"], mmap_mode="r")[test_order]
        console.print(f"real embeddings from the cache {REAL_CACHE}")
    elif plan.quick:
        tr = load_fashion_mnist("train")
        train = _embed(dataset_to_uint8(tr.subset(np.arange(plan.real_train))).numpy(), "embed train subset")
        copies = _embed(_copy_pixels(tr, range(plan.real_copies)), "embed copies")
        queries = _embed(dataset_to_uint8(load_fashion_mnist("test").subset(test_order)).numpy(), "embed test subset")
    else:
        tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
        t0 = time.perf_counter()
        train_all = _embed(dataset_to_uint8(tr).numpy(), "embed 60k train")
        copies_all = _embed(_copy_pixels(tr, range(n_copies_all)), "embed 40k copies")
        test_all = _embed(dataset_to_uint8(te).numpy(), "embed 10k test")
        REAL_CACHE.mkdir(parents=True, exist_ok=True)
        for key, arr in (("train", train_all), ("copies", copies_all), ("test", test_all)):
            np.save(files[key], arr)
        meta_path.write_text(json.dumps(meta))
        console.print(f"real embeddings computed in {time.perf_counter() - t0:.0f} s, cached in {REAL_CACHE}")
        train, copies, queries = train_all[:plan.real_train], copies_all[:plan.real_copies], test_all[test_order]
    db = normalise(np.concatenate([train, copies]).astype(np.float32))
    return Dataset("real", title, db, normalise(np.array(queries, dtype=np.float32)))
