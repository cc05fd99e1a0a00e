"""``vsearch eval --images DIR`` on small real folders made by the test (Fashion-MNIST images as files), with and
without class sub-folders, and the same folders' report; the real data sets' reports are made by hand (README)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clients.cli import app
from evaluation.domain_report import targets
from evaluation.folder_eval import FolderEvalConfig, evaluate_folder
from extractors.datasets import load_fashion_mnist

EXTRACTORS = ["pixels", "random:random_vit_femto_p7_fmnist"]  # cheap: 28 px; the CLI test runs EfficientNet
QUICK = FolderEvalConfig(quick=True, workers=0, n_sources=20)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """train/<class>/ (3 x 40 images, one of them also in test/: a duplicate across the split) and test/<class>/."""
    root = tmp_path_factory.mktemp("eval")
    ds = load_fashion_mnist("test")
    for label in (1, 5, 8):
        idx = np.flatnonzero(ds.labels == label)
        for split, picks in (("train", idx[:40]), ("test", idx[40:50])):
            (root / split / f"c{label}").mkdir(parents=True)
            for k, i in enumerate(picks):
                Image.fromarray(ds.images[i]).resize((40, 40)).save(root / split / f"c{label}" / f"{k:02d}.png")
    shutil.copyfile(root / "train" / "c1" / "00.png", root / "test" / "c1" / "dup.png")
    (root / "train" / "c5" / "broken.jpg").write_bytes(b"not an image")
    return root / "train", root / "test"


def test_with_class_folders_every_view_is_measured_on_the_whole_folder(folders):
    train, test = folders
    result = evaluate_folder(train, EXTRACTORS, test, QUICK, "tiny")
    assert (result["db_images"], result["query_images"]) == (121, 31)
    assert result["duplicate_queries"] == 1  # dup.png is train/c1/00.png
    for name in EXTRACTORS:
        e = result["extractors"][name]
        assert e["skipped_files"] == 1  # broken.jpg, named nowhere else: the rest is the whole folder
        assert 0 < e["class_retrieval"]["map_at_r"] <= 1 and 0 < e["class_retrieval"]["knn20"] <= 1
        assert e["class_retrieval_without_duplicates"]["recall_at_1"] <= e["class_retrieval"]["recall_at_1"]
        assert set(e["label_efficiency_knn20"]) == {"1", "10", "100"}
        assert e["copies"]["recall_at_1"]["identity"] == 1.0  # an unedited image finds itself
    # Trouser, sandal and bag are far apart in pixels: the floor itself separates them.
    assert result["extractors"]["pixels"]["class_retrieval"]["knn20"] > 0.8


def test_without_class_folders_only_the_copy_protocol_runs(folders, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(folders[0].glob("*/*.png"))[:50]:
        shutil.copyfile(p, flat / f"{p.parent.name}_{p.name}")
    result = evaluate_folder(flat, ["pixels"], None, QUICK, "flat")
    e = result["extractors"]["pixels"]
    assert "class_retrieval" not in e and result["query_images"] == 0
    assert e["copies"]["mean_r_at_1"] > 0 and e["copies"]["recall_at_1"]["identity"] == 1.0


def test_the_cli_writes_the_report_and_headline_with_targets(folders, tmp_path):
    train, test = folders
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["eval", "--images", str(train), "--queries", str(test), "--name", "brain-mri",
                                      "--quick", "--copy-sources", "20", "--workers", "0", "--out", str(out),
                                      *[a for e in EXTRACTORS for a in ("--extractor", e)]])
    assert result.exit_code == 0, result.output
    headline = json.loads((out / "headline.json").read_text())
    assert set(headline["extractors"]) == set(EXTRACTORS)
    # Named after brain-mri, the set's targets apply: no label-free learned extractor ran, so none is met, and the
    # target relative to the pre-trained extractor is not judged without it.
    assert headline["targets"] == {"knn20": {"measured": None, "threshold": 0.93, "met": False, "extractor": None}}
    report = (out / "report.md").read_text()
    assert "Brain Tumor MRI" in report and "| pixels |" in report
    assert (out / "figures" / "copies.png").stat().st_size > 1000


def test_targets_take_the_best_label_free_extractor():
    ext = {"efficientnet_lite0_imagenet": {"labels_used": True, "class_retrieval": {"map_at_r": 0.28, "knn20": 0.9}},
           "dino_a": {"labels_used": False, "class_retrieval": {"map_at_r": 0.30, "knn20": 0.95}},
           "dino_b": {"labels_used": False, "class_retrieval": {"map_at_r": 0.34, "knn20": 0.92}},
           "pixels": {"labels_used": False, "class_retrieval": {"map_at_r": 0.5, "knn20": 0.99}}}
    t = targets({"set": "brain-mri", "extractors": ext})
    assert t["map_at_r_vs_pretrained"] == {"measured": 0.34, "threshold": 0.33, "met": True, "extractor": "dino_b"}
    assert t["knn20"] == {"measured": 0.95, "threshold": 0.93, "met": True, "extractor": "dino_a"}


def test_a_folder_without_images_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--images", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "holds no images" in " ".join(result.output.split())


def test_held_out_queries_by_group_never_share_a_group_with_the_database(tmp_path):
    """Video frames: files ``TTTTT_FFFFF.png``; a query's track has no frame left in the database."""
    from evaluation.folder_eval import file_groups, split_queries
    from extractors.datasets import index_image_folder

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for track in range(5):
            for frame in range(4):
                Image.new("L", (4, 4), track * 40 + frame).save(tmp_path / c / f"{track:05d}_{frame:05d}.png")
    index = index_image_folder(tmp_path)
    db, q = split_queries(index, None, FolderEvalConfig(group_pattern=r"^(\d+)_"))
    db_groups = set(file_groups(db, r"^(\d+)_"))
    q_groups = set(file_groups(q, r"^(\d+)_"))
    assert q_groups and not q_groups & db_groups and len(q) % 4 == 0 and len(db) + len(q) == 40


def test_results_of_the_same_protocol_merge_and_others_are_refused():
    from evaluation.domain_report import SAME_PROTOCOL, merge_results

    base = {k: 1 for k in SAME_PROTOCOL} | {"created": "t0", "extractors": {"pixels": {"a": 1}, "x": {"a": 2}}}
    merged = merge_results(base, base | {"created": "t1", "extractors": {"x": {"a": 3}, "y": {"a": 4}}})
    assert merged["extractors"] == {"pixels": {"a": 1}, "x": {"a": 3}, "y": {"a": 4}} and merged["merged"] == ["t0"]
    with pytest.raises(ValueError, match="query_images"):
        merge_results(base, base | {"query_images": 2})
