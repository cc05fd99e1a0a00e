"""Semantic bias: the within-group subsetting and k-NN by hand, then the measurement in quick mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.descriptors import CLS, CLS_GEM, CLS_GEM_WHITENED, SERVED
from evaluation.semantic_bias import (
    best_descriptor,
    descriptor_embeddings,
    group_subset,
    knn,
    knn_by_descriptor,
    semantic_bias,
    training_compute,
    weights_missing,
    within_group_knn,
)
from extractors.datasets import COARSE_GROUPS, load_fashion_mnist
from extractors.registry import load_extractor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_group_subset_picks_exactly_the_groups_classes():
    labels = np.arange(10).repeat(3)
    for group, members in COARSE_GROUPS.items():
        idx = group_subset(labels, group)
        assert sorted(set(labels[idx].tolist())) == members
        assert len(idx) == 3 * len(members)
    assert group_subset(np.array([0, 1, 2, 5, 7, 9, 8]), "footwear").tolist() == [3, 4, 5]


def _features(points):
    return F.normalize(torch.tensor(points, dtype=torch.float32), dim=1)


def test_knn_caps_k_and_votes_by_hand():
    db = _features([[1, 0], [0.9, 0.1], [0, 1]])
    q = _features([[1, 0.05], [0.05, 1]])
    assert knn(db, [0, 0, 1], q, [0, 1], k=20) == 1.0  # k = 20 > 3 database rows: capped, no error
    assert knn(db, [0, 0, 1], q, [1, 0], k=1) == 0.0


def test_within_group_knn_ignores_other_groups():
    # tops classes 0 and 2 and footwear classes 5 and 7 at four directions; a trouser (1) sits right on top of
    # each query but must not vote inside a group.
    dirs = {0: [1, 0, 0, 0], 2: [0, 1, 0, 0], 5: [0, 0, 1, 0], 7: [0, 0, 0, 1]}
    db_y = [0, 2, 5, 7, 1, 1, 1, 1]
    db = _features([dirs[0], dirs[2], dirs[5], dirs[7], dirs[0], dirs[2], dirs[5], dirs[7]])
    q_y = [0, 2, 5, 7, 1]
    q = _features([dirs[0], dirs[2], dirs[5], dirs[7], dirs[0]])
    out = within_group_knn(db, db_y, q, q_y, k=1)
    assert out == {"tops": 1.0, "footwear": 1.0, "mean": 1.0}
    # unrestricted, the T-shirt query and the trouser query are the same point: one of them must be wrong
    assert knn(db, db_y, q, q_y, k=1) < 1.0


def test_best_descriptor_takes_the_highest_and_the_first_of_equals():
    assert best_descriptor({CLS: 0.6, CLS_GEM: 0.7, CLS_GEM_WHITENED: 0.5}) == CLS_GEM
    assert best_descriptor({CLS: 0.7, CLS_GEM: 0.7, CLS_GEM_WHITENED: 0.7}) == CLS


def test_knn_by_descriptor_scores_each_and_keeps_every_number():
    # "a" separates the classes, "b" puts each query on the other class's row: 1.0 and 0.0 by hand
    db = {"a": _features([[1, 0], [0, 1]]), "b": _features([[1, 0], [0, 1]])}
    q = {"a": _features([[1, 0.1], [0.1, 1]]), "b": _features([[0.1, 1], [1, 0.1]])}
    out = knn_by_descriptor(db, [0, 1], q, [0, 1], k=1)
    assert out == {"accuracy": 1.0, "descriptor": "a", "by_descriptor": {"a": 1.0, "b": 0.0}}
    only_b = knn_by_descriptor({"b": db["b"]}, [0, 1], q, [0, 1], k=1)  # only the descriptors both sides have
    assert only_b["descriptor"] == "b" and only_b["by_descriptor"] == {"b": 0.0}


def test_descriptor_embeddings_include_what_is_served():
    images = load_fashion_mnist("test").images[:16]
    vit = descriptor_embeddings("random_vit_femto_p7_fmnist", images)
    assert set(vit) == {CLS, CLS_GEM, CLS_GEM_WHITENED}
    served = load_extractor("random_vit_femto_p7_fmnist")(torch.from_numpy(
        np.repeat(images[:, None], 3, axis=1)))  # 28 px already: the gateway's resize is the identity
    assert torch.allclose(vit[CLS_GEM_WHITENED], served, atol=1e-5)
    for v in vit.values():
        assert torch.allclose(v.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert set(descriptor_embeddings("pixels", images)) == {SERVED}


def test_missing_weights_are_a_note_not_an_error(tmp_path, monkeypatch):
    assert weights_missing("pixels") is None and weights_missing("random_vit_femto_p7_fmnist") is None
    from extractors import registry

    spec = registry.get_spec("supervised_vit_femto_p7_fmnist")
    fake = registry.ExtractorSpec(**{**spec.__dict__, "name": "fake_vit", "weights": lambda: tmp_path / "no.pth"})
    monkeypatch.setitem(registry.REGISTRY, "fake_vit", fake)
    assert "not found" in weights_missing("fake_vit")
    res = semantic_bias(["fake_vit"], quick=True)
    assert "skipped" in res["fake_vit"]


def test_semantic_bias_quick():
    data: dict = {}
    res = semantic_bias(["pixels", "random_vit_femto_p7_fmnist"], quick=True, data=data)
    for name in ("pixels", "random_vit_femto_p7_fmnist"):
        r = res[name]
        assert (r["n_db"], r["n_queries"]) == (3000, 600)
        for v in (r["knn20"], r["coarse_knn20"], *r["within_group_knn20"].values()):
            assert 0.0 <= v <= 1.0
        w = r["within_group_knn20"]
        assert abs(w["mean"] - (w["tops"] + w["footwear"]) / 2) < 1e-9
        assert w["tops"] > 0.25 and w["footwear"] > 1 / 3  # better than chance inside the group
    assert res["pixels"]["knn20"] > 0.7  # the raw-pixel floor on Fashion-MNIST (~0.78 on 3k/600)
    vit = res["random_vit_femto_p7_fmnist"]
    assert set(vit["by_descriptor"]) == {CLS, CLS_GEM, CLS_GEM_WHITENED}
    assert vit["knn20"] == max(v["knn20"] for v in vit["by_descriptor"].values())
    assert vit["within_group_knn20"]["mean"] == vit["by_descriptor"][vit["descriptor"]]["within_group_knn20"]
    assert res["pixels"]["descriptor"] == SERVED
    again = semantic_bias(["pixels"], quick=True, data=data)["pixels"]
    assert {**again, "wall_s": 0} == {**res["pixels"], "wall_s": 0}  # deterministic


def test_training_compute_sums_the_runs_logged_beside_the_weights(tmp_path, monkeypatch):
    from extractors import registry

    (tmp_path / "log_first.jsonl").write_text('{"epoch": 1, "wall_s": 10.0}\n{"epoch": 2, "wall_s": 25.5}\n')
    (tmp_path / "log.jsonl").write_text('{"epoch": 1, "wall_s": 7.0}\n\n{"epoch": 3, "wall_s": 30.0}\n')
    spec = registry.get_spec("supervised_vit_femto_p7_fmnist")
    monkeypatch.setitem(registry.REGISTRY, "logged_vit", registry.ExtractorSpec(
        **{**spec.__dict__, "name": "logged_vit", "weights": lambda: tmp_path / "backbone.pth"}))
    c = training_compute("logged_vit")
    assert (c["epochs"], c["wall_s"]) == (5, 55.5)  # 2 + 3 epochs, 25.5 + 30 s (each log's wall_s is cumulative)
    assert sorted(r["log"] for r in c["runs"]) == ["log.jsonl", "log_first.jsonl"]
    assert training_compute("pixels") is None and training_compute("random_vit_femto_p7_fmnist") is None
