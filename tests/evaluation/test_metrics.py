"""Hand-computed retrieval metrics on tiny rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.metrics import (
    average_precision,
    class_retrieval_metrics,
    copy_detection_metrics,
    interpolated_pr,
    map_at_r,
    micro_average_precision,
    precision_at_k,
    recall_at_k,
    search,
)
from extractors.knn import knn_classify

# Query A: relevant at ranks 1, 3, 6 (R = 3). Query B: relevant at rank 2 only (R = 1).
REL = np.array([[1, 0, 1, 0, 0, 1],
                [0, 1, 0, 0, 0, 0]], dtype=bool)
R = np.array([3, 1])


def test_map_at_r_by_hand():
    # A: (P(1) + P(3)) / 3 = (1 + 2/3) / 3 = 5/9 (rank 6 is past R); B: rank 1 is not relevant -> 0
    assert map_at_r(REL, R) == pytest.approx((5 / 9 + 0) / 2)


def test_precision_and_recall_at_k_by_hand():
    assert precision_at_k(REL, 1) == pytest.approx(0.5)
    assert precision_at_k(REL, 5) == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert recall_at_k(REL, 1) == pytest.approx(0.5)
    assert recall_at_k(REL, 2) == pytest.approx(1.0)


def test_average_precision_by_hand():
    ap = average_precision(REL, R)
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    assert ap[1] == pytest.approx(1 / 2)  # one relevant item: AP = 1 / its rank
    # a relevant item never ranked counts as a miss
    assert average_precision([[1, 0]], [2])[0] == pytest.approx(0.5)


def test_interpolated_pr_by_hand():
    pr = interpolated_pr(REL[:1], R[:1], levels=np.array([0.0, 0.5, 1.0]))
    # precisions by rank 1, 1/2, 2/3, 1/2, 2/5, 1/2; recall reaches 1/2 at rank 3 and 1 at rank 6
    assert pr[0] == pytest.approx([1.0, 2 / 3, 0.5])


def _ranked_db(labels_in_rank_order):
    """Unit vectors at growing angles from the query (angle 0): the database ranks in list order."""
    angles = np.deg2rad(np.arange(len(labels_in_rank_order)) * 10.0)
    db = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    return db, torch.tensor(labels_in_rank_order)


def test_class_retrieval_metrics_matches_hand_ranking():
    db, db_labels = _ranked_db([1, 0, 1, 0, 0, 1])  # query A's ranking; label 0 has 3 items
    query = torch.tensor([[1.0, 0.0]])
    m = class_retrieval_metrics(query, torch.tensor([1]), db, db_labels, ks=(1, 5), knn_k=3)
    assert m["map_at_r"] == pytest.approx(5 / 9, abs=1e-6)
    assert m["map"] == pytest.approx((1 + 2 / 3 + 3 / 6) / 3, abs=1e-6)
    assert m["precision_at_1"] == pytest.approx(1.0)
    assert m["precision_at_5"] == pytest.approx(2 / 5)
    assert m["recall_at_1"] == pytest.approx(1.0)
    # weighted 3-NN: label 1 gets exp(1/T) + exp(cos 20deg / T) vs exp(cos 10deg / T) for label 0
    assert m["knn3_accuracy"] == pytest.approx(1.0)
    assert m["pr_curve"]["precision"][0] == pytest.approx(1.0)


def test_knn_matches_extractors_knn():
    g = torch.Generator().manual_seed(0)
    db = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=1)
    yd, yq = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (50,), generator=g)
    m = class_retrieval_metrics(q, yq, db, yd, chunk=7)
    expected = float((knn_classify(db, yd, q, k=20) == yq).float().mean())
    assert m["knn20_accuracy"] == pytest.approx(expected)
    assert m["recall_at_1"] == pytest.approx(float((knn_classify(db, yd, q, k=1) == yq).float().mean()))
    for key in ("map_at_r", "map", "precision_at_10", "recall_at_1"):
        assert 0.0 <= m[key] <= 1.0


def test_search_is_exact():
    g = torch.Generator().manual_seed(1)
    db, q = torch.randn(100, 8, generator=g), torch.randn(9, 8, generator=g)
    sims, idx = search(q, db, 5, chunk=4)
    full = q @ db.T
    assert torch.equal(idx, full.topk(5, dim=1).indices)
    assert torch.allclose(sims, full.topk(5, dim=1).values)


def test_copy_detection_metrics_by_hand():
    db, _ = _ranked_db([0] * 12)  # 12 database items at 0, 10, ..., 110 degrees
    queries = torch.tensor([[1.0, 0.0]] * 3)  # all rank the database in index order
    targets = torch.tensor([0, 1, 11])  # ranks 1, 2 and 12 (past k = 10)
    m = copy_detection_metrics(queries, targets, db, k=10)
    assert m["recall_at_1"] == pytest.approx(1 / 3)
    assert m["recall_at_10"] == pytest.approx(2 / 3)
    assert m["map_single"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # AP with one relevant item = 1 / rank
    # micro-AP: the 3 x 10 pooled pairs sorted by score; the two matches have the scores cos 0 and cos 10deg,
    # tied with the same items of the other queries: query order breaks ties (stable sort)
    pooled_scores = np.tile(np.cos(np.deg2rad(np.arange(10) * 10.0)), 3)
    pooled_match = np.zeros(30, dtype=bool)
    pooled_match[[0, 11]] = True
    expected, _ = micro_average_precision(pooled_scores, pooled_match, n_positives=3)
    assert m["micro_ap"] == pytest.approx(expected, abs=1e-6)


def test_micro_average_precision_by_hand():
    ap, pr = micro_average_precision([0.9, 0.8, 0.7, 0.1], [True, False, True, False], n_positives=3)
    assert ap == pytest.approx((1 + 2 / 3) / 3)  # precision 1 at the first match, 2/3 at the second
    assert pr["recall"][-1] == pytest.approx(2 / 3)
    assert math.isclose(pr["precision"][0], 1.0)


def test_class_retrieval_metrics_match_the_relevance_matrix_functions():
    """The fast one-pass implementation against the plain definitions on a random full ranking."""
    g = torch.Generator().manual_seed(2)
    db = torch.nn.functional.normalize(torch.randn(400, 8, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=1)
    yd, yq = torch.randint(0, 5, (400,), generator=g), torch.randint(0, 5, (30,), generator=g)
    m = class_retrieval_metrics(q, yq, db, yd, ks=(1, 10), chunk=8)
    order = (q @ db.T).argsort(dim=1, descending=True)
    rel = (yd[order] == yq[:, None]).numpy()
    r = torch.bincount(yd, minlength=5)[yq].numpy()
    assert m["map_at_r"] == pytest.approx(map_at_r(rel, r))
    assert m["map"] == pytest.approx(float(average_precision(rel, r).mean()))
    assert m["precision_at_10"] == pytest.approx(precision_at_k(rel, 10))
    assert m["recall_at_1"] == pytest.approx(recall_at_k(rel, 1))
    assert m["pr_curve"]["precision"] == pytest.approx(interpolated_pr(rel, r).mean(0).tolist())
