"""Label efficiency: the labelled database, the classifier accuracy, and the measurement in quick mode."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.label_efficiency import classifier_accuracy, label_efficiency, labelled_database
from extractors.datasets import load_fashion_mnist
from extractors.training import labelled_subset

RANDOM = "random_vit_femto_p7_fmnist"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return {"train": load_fashion_mnist("train"), "test": load_fashion_mnist("test")}


@pytest.mark.parametrize("n", [1, 10, 100])
def test_database_is_the_presets_labelled_subset(data, n):
    labels = data["train"].labels
    idx = labelled_database(labels, n)
    assert len(idx) == 10 * n
    assert np.bincount(labels[idx], minlength=10).tolist() == [n] * 10
    assert np.array_equal(idx, labelled_subset(labels, n, seed=0))


def test_a_headless_network_has_no_classifier_accuracy(data):
    assert classifier_accuracy(RANDOM, data["test"].images[:10], data["test"].labels[:10]) is None


def test_label_efficiency_quick(data):
    # the random ViT stands in for both the frozen features and the few-label networks (no weights needed)
    res = label_efficiency(quick=True, features=RANDOM, trained=RANDOM, data=data)
    assert list(res) == ["1", "10", "100"]
    for n in (1, 10, 100):
        r = res[str(n)]
        assert r["n_db"] == 10 * n and r["k"] == min(20, 10 * n) and r["n_queries"] == 1000
        assert r["dino_features"] == r["trained_on_these_labels"]  # the same network: the same numbers
        assert "trained_classifier" in r and r["trained_classifier"] is None
        for key in ("dino_features", "pixels"):
            assert 0.1 < r[key] <= 1.0  # above chance even with one label per class
        by = r["dino_features_by_descriptor"]
        assert len(by) == 3 and r["dino_features"] == by[r["dino_features_descriptor"]] == max(by.values())
    assert res["1"]["pixels"] < res["100"]["pixels"]  # more labels, a better k-NN


def test_missing_few_label_weights_are_skipped(data, tmp_path, monkeypatch):
    from extractors import registry

    for n in (1, 10):
        spec = registry.get_spec(f"supervised_labels{n}_vit_femto_p7_fmnist")
        monkeypatch.setitem(registry.REGISTRY, f"absent{n}", registry.ExtractorSpec(
            **{**spec.__dict__, "name": f"absent{n}", "weights": lambda: tmp_path / "absent.pth"}))
    res = label_efficiency(quick=True, ns=(1, 10), features=RANDOM, trained="absent{n}", references=(), data=data)
    for n in ("1", "10"):
        assert "not found" in res[n]["trained_on_these_labels"]["skipped"]
        assert "trained_classifier" not in res[n]
        assert isinstance(res[n]["dino_features"], float)
