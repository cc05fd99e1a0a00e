"""The data sets: ``Dataset`` (rows, queries and the exact k-th score per query), the seeded synthetic mixture,
exact ground truth and tie-aware recall."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.progress import Progress

from benchmarks.vector_search.plan import SEED, TIE_EPS, TOP_K, Plan

SYNTH_DIM = 384
SYNTH_SUBSPACE = 16
SYNTH_SPREAD = 0.6  # norm of a point's offset inside its component's subspace (centres have norm ~1)
SYNTH_NOISE = 0.1  # norm of the isotropic noise
SYNTH_BLOCK = 100_000  # rows generated per seeded block: the 100k set is the first block of the 1M set


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



def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def synthetic_sets(plan: Plan, progress: Progress) -> list[Dataset]:
    """One data set per size in ``plan.synth_sizes``: the largest is generated once, the others are its prefixes
    (``synthetic`` makes a smaller set a prefix of a larger one) with the same queries."""
    db, queries = synthetic(max(plan.synth_sizes), plan.n_queries, plan.n_clusters, progress=progress)
    title = (f"synthetic Gaussian mixture, {plan.n_clusters:,} components (centre + random {SYNTH_SUBSPACE}-d "
             "subspace + noise), L2-normalised")
    return [with_ground_truth(Dataset(f"synthetic_{size_label(n)}", title, db[:n], queries), progress)
            for n in plan.synth_sizes]
