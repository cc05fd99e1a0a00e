"""The graded near-duplicate protocol and DINO's copy-detection descriptors: hand-computed pieces, then a quick run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from evaluation.descriptors import CLS, CLS_GEM, CLS_GEM_WHITENED, DESCRIPTORS, ViTDescriptors
from evaluation.near_duplicates import (
    QUICK_DB,
    QUICK_QUERIES,
    _level_metrics,
    edited_queries,
    graded_near_duplicates,
    headline_part,
    write_json,
)
from extractors.copies import QUICK_LEVEL_NAMES, geometric_level_names, get_level
from extractors.datasets import load_photos
from extractors.descriptors import PCAWhitening, gem
from extractors.embedding import EmbeddingModel, ViTCLSEmbedding
from extractors.registry import REGISTRY, load_network

RANDOM_VIT = "random_vit_femto_p7_fmnist"
UNTRAINED = "supervised_coarse_vit_femto_p7_fmnist"  # its weights are pointed at a missing file below


# --- GeM ---------------------------------------------------------------------------------------------------------

def test_gem_by_hand():
    tokens = torch.tensor([[[1.0, 4.0], [3.0, 2.0]]])  # [B=1, N=2, D=2]
    assert torch.allclose(gem(tokens, p=2), torch.tensor([[5.0 ** 0.5, 10.0 ** 0.5]]))
    assert torch.allclose(gem(tokens, p=1), torch.tensor([[2.0, 3.0]]))


def test_gem_p1_is_mean_pooling_and_large_p_approaches_max():
    tokens = torch.rand(3, 16, 8) + 0.01
    assert torch.allclose(gem(tokens, p=1), tokens.mean(1), atol=1e-6)
    big = gem(tokens.double(), p=200)
    top = tokens.double().amax(1)
    assert torch.all(big <= top + 1e-12) and torch.allclose(big, top, rtol=0.02)
    assert torch.all(gem(tokens, p=4) >= gem(tokens, p=1) - 1e-6)  # power means grow with p


def test_gem_clamps_negative_activations():
    tokens = torch.tensor([[[-5.0], [-1.0]]])
    assert float(gem(tokens, p=4, eps=1e-6)) == pytest.approx(1e-6, rel=1e-4)


# --- PCA whitening -----------------------------------------------------------------------------------------------

def test_whitening_makes_the_fit_set_covariance_identity():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=g)
    x = torch.randn(5000, 6, generator=g) @ mixing + 3.0  # correlated, off-centre
    w = PCAWhitening.fit(x)
    y = w.transform(x, normalize=False).double()
    assert torch.allclose(y.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-4)
    cov = (y - y.mean(0)).T @ (y - y.mean(0)) / len(y)
    assert torch.allclose(cov, torch.eye(6, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(w.transform(x).norm(dim=1), torch.ones(len(x)), atol=1e-5)
    assert torch.all(w.eigenvalues[:-1] >= w.eigenvalues[1:])  # largest first


def test_whitening_by_hand_on_axis_aligned_data():
    # variances 4 (x) and 1 (y), mean (1, 0): whitening divides x by 2 and y by 1 after centring
    x = torch.tensor([[3.0, 1.0], [-1.0, -1.0], [3.0, -1.0], [-1.0, 1.0]])
    w = PCAWhitening.fit(x)
    assert torch.allclose(w.mean, torch.tensor([1.0, 0.0]))
    assert torch.allclose(w.eigenvalues, torch.tensor([4.0, 1.0]))
    assert torch.allclose(w.transform(torch.tensor([[5.0, 3.0]]), normalize=False).abs(), torch.tensor([[2.0, 3.0]]))


def test_whitening_floors_degenerate_directions():
    x = torch.randn(100, 3)
    x[:, 2] = 0.0  # a direction with no variance
    y = PCAWhitening.fit(x).transform(x, normalize=False)
    assert torch.isfinite(y).all()


# --- ViT descriptors ---------------------------------------------------------------------------------------------

def test_vit_descriptors_cls_is_the_served_embedding_and_gem_part_is_gem_of_the_patch_tokens():
    x = torch.randint(0, 256, (5, 3, 28, 28), dtype=torch.uint8)
    out = ViTDescriptors(RANDOM_VIT)(x)
    assert set(out) == {CLS, CLS_GEM}
    served_before = EmbeddingModel(ViTCLSEmbedding(load_network(RANDOM_VIT)), REGISTRY[RANDOM_VIT].mean,
                                   REGISTRY[RANDOM_VIT].std)
    assert torch.allclose(out[CLS], served_before(x), atol=1e-5)
    assert out[CLS_GEM].shape == (5, 256)
    assert torch.allclose(out[CLS_GEM].norm(dim=1), torch.ones(5), atol=1e-5)
    # both halves weigh the same: each part was unit before the joint normalisation
    halves = out[CLS_GEM].reshape(5, 2, 128).norm(dim=2)
    assert torch.allclose(halves, torch.full((5, 2), 2 ** -0.5), atol=1e-5)
    spec = REGISTRY[RANDOM_VIT]
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = load_network(RANDOM_VIT).forward_features((x.float() - mean) / std)
    pooled = torch.nn.functional.normalize(gem(tokens[:, 1:], p=4), dim=1)
    assert torch.allclose(out[CLS_GEM][:, 128:] * 2 ** 0.5, pooled, atol=1e-5)


def test_descriptors_refuse_a_network_without_patch_tokens():
    with pytest.raises(ValueError):
        ViTDescriptors("pixels")


# --- metric reuse by hand ------------------------------------------------------------------------------------------

def test_level_metrics_by_hand():
    db = torch.eye(4)
    # query 0 is closest to row 0 (its target: rank 1); query 1 is closest to row 2, then row 1 (its target: rank 2)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0, 0], [0, 0.5, 1.0, 0]]), dim=1)
    m = _level_metrics(q, np.array([0, 1]), db, k=4)
    assert m["recall_at_1"] == 0.5 and m["recall_at_10"] == 1.0
    assert m["map"] == pytest.approx((1 + 1 / 2) / 2)


def test_edited_queries_are_reproducible():
    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    levels = [get_level(n) for n in QUICK_LEVEL_NAMES]
    a, b = edited_queries(images, [4, 1], levels, 3), edited_queries(images, [4, 1], levels, 3)
    assert list(a) == list(QUICK_LEVEL_NAMES)
    for name in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True))
    assert np.array_equal(a["identity"][0], images[4])
    assert np.array_equal(a["flip"][1], images[1][:, ::-1])


def test_headline_part_by_hand():
    result = {"level_names": ["identity", "flip"], "geometric_levels": ["flip"],
              "fashion_mnist": {"results": {"a": {"levels": {"identity": {"recall_at_1": 1.0},
                                                             "flip": {"recall_at_1": 0.25}}}}}}
    assert headline_part(result) == {"near_duplicates": {"identity": {"a": 1.0}, "flip": {"a": 0.25}},
                                     "geometric_levels": ["flip"]}


# --- a quick run ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run():
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        nowhere = REGISTRY[UNTRAINED].weights().parent / "missing.pth"
        mp.setitem(REGISTRY, UNTRAINED, replace(REGISTRY[UNTRAINED], weights=lambda: nowhere))
        return graded_near_duplicates(["pixels", RANDOM_VIT, UNTRAINED], quick=True)


def test_quick_run_identity_is_found_and_shapes_are_right(quick_run, tmp_path):
    r = quick_run
    assert r["level_names"] == list(QUICK_LEVEL_NAMES)
    assert r["geometric_levels"] == geometric_level_names([get_level(n) for n in QUICK_LEVEL_NAMES])
    assert r["geometric_levels"] == ["crop_0.85", "translate_1", "flip", "rotate_5"]
    fm = r["fashion_mnist"]
    assert (fm["n_db"], fm["n_queries_per_level"]) == (sum(QUICK_DB), QUICK_QUERIES)
    assert list(fm["results"]) == ["pixels", RANDOM_VIT]
    assert "weights not found" in r["skipped"]["fashion_mnist"][UNTRAINED]
    for name, res in fm["results"].items():
        assert list(res["levels"]) == list(QUICK_LEVEL_NAMES)
        assert res["levels"]["identity"]["recall_at_1"] == 1.0, name
        assert res["levels"]["identity"]["map"] == 1.0, name
        for level, m in res["levels"].items():
            assert 0.0 <= m["recall_at_1"] <= m["recall_at_10"] <= 1.0, (name, level)
            assert m["recall_at_1"] <= m["map"] + 1e-9 <= 1.0 + 1e-9, (name, level)
        geo = np.mean([res["levels"][n]["recall_at_1"] for n in r["geometric_levels"]])
        assert res["geometric_mean_r_at_1"] == pytest.approx(geo, abs=1e-4)
        assert res["levels"]["strong"]["recall_at_1"] < 1.0  # the edits are not all trivial
    # photos: the pixel floor only (the 28 px ViT is not made for photos)
    ph = r["photos"]
    assert list(ph["results"]) == ["pixels"] and ph["n_db"] == len(load_photos())
    assert ph["results"]["pixels"]["levels"]["identity"]["recall_at_1"] == 1.0
    assert RANDOM_VIT in r["skipped"]["photos"]
    # descriptors: all three for the ViT, the CLS one equal to the main table (what is served)
    d = r["descriptors"]["fashion_mnist"]
    assert list(d) == [RANDOM_VIT] and tuple(d[RANDOM_VIT]) == DESCRIPTORS
    main = {n: m["recall_at_1"] for n, m in fm["results"][RANDOM_VIT]["levels"].items()}
    assert d[RANDOM_VIT][CLS]["levels"] == main
    assert d[RANDOM_VIT][CLS_GEM_WHITENED]["levels"]["identity"] == 1.0
    assert r["descriptors"]["best"][RANDOM_VIT]["mean_r_at_1"] in DESCRIPTORS
    assert r["descriptors"]["whitening"]["n"] == QUICK_DB[0]
    # JSON-able, and the headline part has exactly its two keys
    saved = json.loads(write_json(r, tmp_path / "nd.json").read_text())
    assert saved["fashion_mnist"]["results"]["pixels"]["levels"]["flip"] == fm["results"]["pixels"]["levels"]["flip"]
    head = headline_part(saved)
    assert set(head) == {"near_duplicates", "geometric_levels"}
    assert list(head["near_duplicates"]) == list(QUICK_LEVEL_NAMES)
    assert head["near_duplicates"]["identity"] == {"pixels": 1.0, RANDOM_VIT: 1.0}
