"""Retrieval metrics from exact (brute-force) cosine search.

Two kinds of ground truth:

- class retrieval: a database item is relevant to a query when it has the query's label. Reported:
  MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check": R = number of database items relevant to the
  query; MAP@R = mean over queries of (1/R) * sum_{i<=R} P(i) * rel(i)), mAP over the full ranking,
  precision@k, recall@1 (a relevant item is ranked first = 1-NN accuracy), weighted 20-NN accuracy (DINO's
  protocol, exp(s / 0.07) votes, as ``extractors.knn``), and an interpolated precision-recall curve.
- copy detection: each query (an edited copy) has exactly one relevant database item (its original). Reported:
  recall@1, recall@10, ``map_single`` = mean average precision with the single relevant target (AP = 1/rank of
  the target, i.e. the mean reciprocal rank; 0 when it is past the last rank searched), and ``micro_ap`` =
  DISC21's micro-average precision: the top-10 (query, candidate, score) pairs of all queries are pooled and
  sorted by score, and precision/recall are measured over that single list (recall = found targets /
  number of queries). micro-AP also punishes scores that are not comparable between queries.

Embeddings must be L2-normalised (similarity = dot product). Search runs in query chunks so a 10k x 60k
similarity matrix is never held at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

RECALL_LEVELS = np.linspace(0.0, 1.0, 21)


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)


def iter_similarity(queries: torch.Tensor, db: torch.Tensor, chunk: int = 256) -> Iterator[tuple[int, torch.Tensor]]:
    """(start row, similarity chunk [c, N_db]) over query chunks: exact search by matrix product."""
    queries, db = _as_tensor(queries).float(), _as_tensor(db).float()
    db_t = db.T.contiguous()
    for i in range(0, len(queries), chunk):
        yield i, queries[i:i + chunk] @ db_t


@torch.no_grad()
def search(queries, db, k: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (similarities, indices) of every query in ``db``, best first: [Q, k] each."""
    k = min(k, len(db))
    sims, idx = [], []
    for _, s in iter_similarity(queries, db, chunk):
        v, i = s.topk(k, dim=1)
        sims.append(v)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


# --- metrics on a relevance matrix (rows = queries, columns = ranks, best first) ------------------------------

def precision_at_k(relevance, k: int) -> float:
    """Mean fraction of relevant items among the first ``k`` ranks."""
    rel = _as_tensor(relevance).bool()
    return float(rel[:, :k].float().sum(1).div(k).mean())


def recall_at_k(relevance, k: int) -> float:
    """Fraction of queries with at least one relevant item in the first ``k`` ranks (the retrieval/copy-detection
    "recall@k"; recall@1 = 1-NN accuracy for class retrieval)."""
    rel = _as_tensor(relevance).bool()
    return float(rel[:, :k].any(1).float().mean())


def map_at_r(relevance, n_relevant) -> float:
    """MAP@R. ``relevance`` [Q, >= max R] ranked relevance, ``n_relevant`` [Q] = R per query."""
    rel = _as_tensor(relevance).bool()
    r = _as_tensor(n_relevant).long()
    return float(_map_at_r_rows(rel, r).mean())


def _map_at_r_rows(rel: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    hits = rel.double().cumsum(1)
    within_r = ranks[None, :] <= r[:, None]
    terms = (hits / ranks) * rel.double() * within_r
    return terms.sum(1) / r.clamp(min=1).double()


def average_precision(relevance, n_relevant) -> np.ndarray:
    """AP per query over the given ranks: sum_i P(i) rel(i) / n_relevant (relevant items never ranked
    count as misses). With one relevant item, AP = 1 / its rank."""
    rel = _as_tensor(relevance).bool().double()
    r = _as_tensor(n_relevant).double()
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    ap = (rel.cumsum(1) / ranks * rel).sum(1) / r.clamp(min=1)
    return ap.numpy()


def interpolated_pr(relevance, n_relevant, levels: np.ndarray = RECALL_LEVELS) -> np.ndarray:
    """Interpolated precision at each recall level (max precision at any recall >= level), per query [Q, L]."""
    rel = _as_tensor(relevance).bool().double()
    r = _as_tensor(n_relevant).double().clamp(min=1)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    hits = rel.cumsum(1)
    precision = hits / ranks
    recall = hits / r[:, None]
    # running max of precision from the end: the interpolated precision at each rank
    interp = precision.flip(1).cummax(1).values.flip(1)
    out = torch.zeros(len(rel), len(levels), dtype=torch.float64)
    for j, level in enumerate(levels):
        reached = recall >= level - 1e-12
        first = torch.where(reached.any(1), reached.double().argmax(1), torch.full((len(rel),), -1))
        ok = first >= 0
        out[ok, j] = interp[ok, first[ok]]
    return out.numpy()


def weighted_knn_predict(top_sims, top_labels, num_classes: int, T: float = 0.07) -> torch.Tensor:
    """DINO's weighted k-NN vote from the top-k similarities and neighbour labels (same as extractors.knn)."""
    top_sims, top_labels = _as_tensor(top_sims).float(), _as_tensor(top_labels).long()
    votes = torch.zeros(len(top_sims), num_classes)
    votes.scatter_add_(1, top_labels, (top_sims / T).exp())
    return votes.argmax(1)


# --- the two tasks ------------------------------------------------------------------------------------------

def ranked_relevance(sims: torch.Tensor, relevant: torch.Tensor) -> np.ndarray:
    """The relevance flags of each row's items in descending similarity order: bool [Q, N].

    Sorts one int32 key per item instead of (value, index) pairs (~2x faster on CPU): the float's bits mapped
    to an order-preserving integer, with the lowest bit replaced by "not relevant". The key moves by at most
    one unit in the last place, so only items within 1 ulp of each other (ties) can swap, and at a tie an
    irrelevant item ranks first (the pessimistic tie-break)."""
    bits = sims.float().contiguous().numpy().view(np.int32)
    keys = np.where(bits >= 0, bits, bits ^ np.int32(0x7FFFFFFF))
    keys = (keys & np.int32(-2)) | (~relevant.numpy()).astype(np.int32)
    keys.sort(axis=1)
    return (keys[:, ::-1] & 1) == 0


def _relevant_ranks(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, j = 1-based index among the row's relevant items, 1-based rank) of every relevant item."""
    rows, cols = np.nonzero(rel)
    counts = rel.sum(1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    j = np.arange(len(rows)) - starts[rows] + 1
    return rows, j.astype(np.float64), (cols + 1).astype(np.float64)


@torch.no_grad()
def class_retrieval_metrics(query_emb, query_labels, db_emb, db_labels, ks: tuple[int, ...] = (1, 5, 10, 20, 100),
                            knn_k: int = 20, chunk: int = 128, progress=None) -> dict:
    """All class-retrieval metrics in one pass over the exact ranking of the whole database.

    ``progress``: an optional callable ``progress(n_done_queries)`` (for a progress bar)."""
    q_lab, db_lab = _as_tensor(query_labels).long(), _as_tensor(db_labels).long()
    num_classes = int(max(int(q_lab.max()), int(db_lab.max()))) + 1
    class_count = torch.bincount(db_lab, minlength=num_classes)
    n_q = len(q_lab)
    sums = {"map_at_r": 0.0, "map": 0.0, "recall_at_1": 0.0, **{f"precision_at_{k}": 0.0 for k in ks}}
    knn_correct, pr = 0, np.zeros(len(RECALL_LEVELS))
    for start, sims in iter_similarity(query_emb, db_emb, chunk):
        labels = q_lab[start:start + len(sims)]
        top_sims, top_idx = sims.topk(min(knn_k, sims.shape[1]), dim=1)
        knn = weighted_knn_predict(top_sims, db_lab[top_idx], num_classes)
        knn_correct += int((knn == labels).sum())
        rel = ranked_relevance(sims, db_lab[None, :] == labels[:, None])
        r = class_count[labels].numpy().astype(np.float64)
        rows, j, rank = _relevant_ranks(rel)
        prec = j / rank  # precision at each relevant item
        sums["map"] += float((np.bincount(rows, prec, len(rel)) / np.maximum(r, 1)).sum())
        sums["map_at_r"] += float((np.bincount(rows, prec * (rank <= r[rows]), len(rel)) / np.maximum(r, 1)).sum())
        sums["recall_at_1"] += float(rel[:, 0].sum())
        for k in ks:
            sums[f"precision_at_{k}"] += float(rel[:, :k].mean(1).sum())
        # interpolated precision at recall L = max precision at the relevant items j >= ceil(L * R)
        r_max = int(r.max())
        padded = np.zeros((len(rel), r_max))
        padded[rows, (j - 1).astype(np.int64)] = prec
        best_after = np.maximum.accumulate(padded[:, ::-1], axis=1)[:, ::-1]
        need = np.clip(np.ceil(RECALL_LEVELS[None, :] * r[:, None] - 1e-9).astype(np.int64) - 1, 0, r_max - 1)
        pr += np.take_along_axis(best_after, need, axis=1).sum(0)
        if progress:
            progress(len(sims))
    out = {k: v / n_q for k, v in sums.items()}
    out[f"knn{knn_k}_accuracy"] = knn_correct / n_q
    out["pr_curve"] = {"recall": RECALL_LEVELS.tolist(), "precision": (pr / n_q).tolist()}
    return out


@torch.no_grad()
def copy_detection_metrics(query_emb, target_index, db_emb, k: int = 100, micro_k: int = 10,
                           chunk: int = 512) -> dict:
    """Copy-detection metrics: query ``i``'s only relevant database row is ``target_index[i]``.

    Searches the top ``k`` (>= 10); ``map_single`` counts a target past rank ``k`` as AP 0. ``micro_ap`` pools
    the top-``micro_k`` pairs of every query (DISC21 allows 10 predictions per query on average)."""
    target = _as_tensor(target_index).long()
    sims, idx = search(query_emb, db_emb, max(k, 10, micro_k), chunk)
    rel = idx == target[:, None]
    ap = average_precision(rel, torch.ones(len(rel)))
    micro_ap, pr = micro_average_precision(sims[:, :micro_k].flatten(), rel[:, :micro_k].flatten(),
                                           n_positives=len(rel))
    return {"recall_at_1": recall_at_k(rel, 1), "recall_at_10": recall_at_k(rel, 10), "map_single": float(ap.mean()),
            "micro_ap": micro_ap, "pr_curve": pr, "searched_k": int(idx.shape[1]), "micro_k": micro_k}


def micro_average_precision(scores, is_match, n_positives: int, n_points: int = 50) -> tuple[float, dict]:
    """DISC21 micro-AP of pooled (score, is-match) pairs: AP of the globally score-sorted list, recall over
    ``n_positives`` (queries that have a match). Also returns a down-sampled precision-recall curve."""
    scores, is_match = np.asarray(scores, dtype=np.float64), np.asarray(is_match, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    match = is_match[order]
    tp = np.cumsum(match)
    precision = tp / np.arange(1, len(match) + 1)
    recall = tp / max(n_positives, 1)
    ap = float((precision * match).sum() / max(n_positives, 1))
    # curve points: at the matches (where recall steps up), evenly thinned, plus the end of the list
    steps = np.flatnonzero(match)
    if len(steps):
        steps = steps[np.unique(np.linspace(0, len(steps) - 1, min(n_points, len(steps))).astype(int))]
    pick = np.unique(np.append(steps, len(match) - 1)) if len(match) else steps
    return ap, {"recall": recall[pick].tolist(), "precision": precision[pick].tolist()}
