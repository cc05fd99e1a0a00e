"""Training on a folder of images (``vsearch train dino|supervised --images DIR``): real Fashion-MNIST images written
as files in class folders by the test, with the odd files a user's folder holds (grey, RGBA, palette, 16-bit, an EXIF
turn, a large photo, a corrupt and a truncated file)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clients.cli import app
from extractors.datasets import index_image_folder, load_fashion_mnist
from extractors.presets import DINO_PRESETS, SUPERVISED_PRESETS
from extractors.train_dino import train_dino
from extractors.train_supervised import train_supervised
from extractors.training import EfficientNetBackbone, load_initial_backbone
from extractors.training_data import TrainingImages, batch_indices, decode_for_training
from extractors.vit import build_vit

CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker"}
BAD_FILES = ["sneaker/corrupt.jpg", "trouser/truncated.png"]


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """3 class folders of 40 real images each, a few stored in odd ways, plus two files no decoder can read."""
    root = tmp_path_factory.mktemp("folder")
    ds = load_fashion_mnist("test")
    for label, name in CLASSES.items():
        (root / name).mkdir()
        for k, i in enumerate(np.flatnonzero(ds.labels == label)[:40]):
            Image.fromarray(ds.images[i]).resize((56, 56)).save(root / name / f"{k:03d}.png")
    odd = Image.fromarray(ds.images[np.flatnonzero(ds.labels == 0)[50]]).resize((56, 56))
    odd.convert("RGBA").save(root / "tshirt" / "rgba.png")
    odd.convert("P").save(root / "tshirt" / "palette.png")
    Image.fromarray(np.asarray(odd, dtype=np.uint16) * 257).save(root / "tshirt" / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    odd.convert("RGB").rotate(90, expand=True).save(root / "tshirt" / "turned.jpg", exif=exif.tobytes())
    odd.convert("RGB").resize((3000, 3000)).save(root / "tshirt" / "large.jpg", quality=90)
    (root / "sneaker" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    png = io.BytesIO()
    odd.save(png, format="PNG")
    (root / "trouser" / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    return root


def test_every_odd_file_decodes_to_the_model_input_and_bad_ones_raise(folder):
    for name in ("rgba.png", "palette.png", "grey16.png", "turned.jpg", "large.jpg"):
        x = decode_for_training(folder / "tshirt" / name, 32)
        assert x.shape == (3, 32, 32) and x.dtype == np.uint8, name
        assert x.std() > 10, f"{name} decoded to a flat image"
    for bad in BAD_FILES:
        with pytest.raises(Exception):  # noqa: B017 - any decoder error: the loader skips the file
            decode_for_training(folder / bad, 32)


def test_an_epoch_resumed_mid_way_sees_exactly_the_batches_it_had_not_seen(folder):
    full = [b.tolist() for b in batch_indices(100, 16, seed=3, epoch=5)]
    assert [b.tolist() for b in batch_indices(100, 16, seed=3, epoch=5, start_batch=2)] == full[2:]
    # Two ranks of a distributed run split every global batch between them, nothing twice.
    for b, r0, r1 in zip(full, batch_indices(100, 16, 3, 5, rank=0, world=2), batch_indices(100, 16, 3, 5, rank=1,
                                                                                           world=2), strict=True):
        assert sorted(r0.tolist() + r1.tolist()) == sorted(b)
    data = TrainingImages("t", 32, 16, seed=0, index=index_image_folder(folder), workers=0)
    labels = torch.cat([y for _, y in data.epoch(0)])
    # 127 files make 7 full batches of 16; the bad files among them are dropped and named, nothing else is
    assert len(labels) + len(data.skipped) == 112 and data.skipped and data.skipped <= set(BAD_FILES)


def test_dino_on_a_folder_skips_bad_files_and_resumes(folder, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "dino", "--preset", "smoke-folder", "--images", str(folder),
                                      "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert sorted((out / "skipped_files.txt").read_text().split()) == BAD_FILES
    config = json.loads((out / "config.json").read_text())
    assert config["images"] == str(folder) and config["mean"] is None  # ImageNet statistics for a folder
    record = train_dino(DINO_PRESETS["smoke-folder"].model_copy(update={"images": str(folder), "epochs": 2}), out)
    log = read_log(out / "log.jsonl")
    assert [r["epoch"] for r in log] == [0, 1, 2] and record["epoch"] == 2
    assert all(0 <= r["knn20"] <= 1 for r in log)  # the monitor scored a held-out sample of the class folders
    assert np.isfinite([r["loss"] for r in log[1:]]).all()


def test_a_run_stopped_mid_epoch_finishes_that_epoch_on_resume(folder, tmp_path):
    cfg = DINO_PRESETS["smoke-folder"].model_copy(update={"images": str(folder), "epochs": 1,
                                                          "time_limit_min": 1e-6})
    first = train_dino(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert first["partial_epoch"] and (state["epoch"], state["batch"]) == (0, 1)
    train_dino(cfg.model_copy(update={"time_limit_min": 0.0}), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert (state["epoch"], state["batch"]) == (1, 0)
    log = read_log(tmp_path / "log.jsonl")
    assert [(r["epoch"], r.get("partial_epoch", False)) for r in log] == [(0, False), (1, True), (1, False)]


def test_supervised_on_a_folder_takes_labels_from_its_class_folders(folder, tmp_path):
    cfg = SUPERVISED_PRESETS["smoke-folder"].model_copy(update={"images": str(folder), "epochs": 3})
    record = train_supervised(cfg, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_classes"] == 3  # one output per class folder
    assert record["train_acc"] > 0.5, record  # chance is 1/3
    state = torch.load(tmp_path / "backbone.pth")
    assert state["head.weight"].shape[0] == 3
    record = train_supervised(cfg.model_copy(update={"epochs": 4}), tmp_path)
    assert [r["epoch"] for r in read_log(tmp_path / "log.jsonl")] == [0, 1, 2, 3, 4]


def _train_cli(*args: str):
    result = CliRunner().invoke(app, ["train", *args])
    result.text = " ".join(result.output.replace("│", " ").split())  # rich's panels wrap and frame the message
    return result


def test_bad_folders_are_refused_before_work_starts(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    result = _train_cli("dino", "--preset", "smoke-folder", "--images", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "r1"))
    assert result.exit_code == 2 and "holds no images" in result.text
    (tmp_path / "junk").mkdir()
    for i in range(3):
        (tmp_path / "junk" / f"{i}.jpg").write_bytes(b"junk")
    result = _train_cli("dino", "--preset", "smoke-folder", "--images", str(tmp_path / "junk"),
                        "--out", str(tmp_path / "r2"))
    assert result.exit_code == 2 and "can be decoded" in result.text
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    result = _train_cli("supervised", "--preset", "smoke-folder", "--images", str(flat), "--out", str(tmp_path / "r3"))
    assert result.exit_code == 2 and "class sub-folders" in result.text
    result = _train_cli("dino", "--preset", "smoke-folder", "--images", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "not a folder" in result.text


def test_a_checkpoint_of_another_network_is_refused_not_overwritten(folder, tmp_path):
    cfg = DINO_PRESETS["smoke-folder"].model_copy(update={"images": str(folder), "epochs": 1, "train_limit": 32})
    train_dino(cfg, tmp_path)
    before = (tmp_path / "checkpoint.pth").read_bytes()
    other = cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"patch_size": 4})})
    with pytest.raises(ValueError, match="checkpoint of"):
        train_dino(other, tmp_path)
    assert (tmp_path / "checkpoint.pth").read_bytes() == before


def test_continued_pretraining_starts_from_pretrained_weights(tmp_path):
    """EfficientNet-Lite0 from its ImageNet weights; an official-key ViT file made at 224 px into a 96 px ViT."""
    from extractors.registry import load_network

    net = EfficientNetBackbone()
    load_initial_backbone(net, "efficientnet_lite0_imagenet")
    imagenet = load_network("efficientnet_lite0_imagenet").state_dict()
    assert all(torch.equal(v, imagenet[k]) for k, v in net.state_dict().items())
    four = EfficientNetBackbone(num_classes=4)  # fine-tuning on 4 class folders: all but the new head
    load_initial_backbone(four, "efficientnet_lite0_imagenet")
    assert four._fc.weight.shape == (4, 1280)
    assert all(torch.equal(v, imagenet[k]) for k, v in four.state_dict().items() if not k.startswith("_fc."))

    official = build_vit("tiny", 16, img_size=224)
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in official.state_dict().items()}},
               tmp_path / "dino_checkpoint.pth")
    small = build_vit("tiny", 16, img_size=96)
    load_initial_backbone(small, str(tmp_path / "dino_checkpoint.pth"))
    assert small.pos_embed.shape == (1, 37, 192)
    assert torch.equal(small.blocks[3].attn.qkv.weight, official.blocks[3].attn.qkv.weight)
    with pytest.raises(ValueError, match="does not match"):
        load_initial_backbone(build_vit("femto", 16, img_size=96), str(tmp_path / "dino_checkpoint.pth"))
    with pytest.raises(ValueError, match="not an EfficientNet"):
        load_initial_backbone(EfficientNetBackbone(), str(tmp_path / "dino_checkpoint.pth"))


def test_two_gloo_processes_train_one_run(folder, tmp_path):
    """``torchrun`` with two CPU processes (gloo): one run folder, one log, both processes stepping together."""
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "clients.cli", "train", "dino", "--preset",
         "smoke-folder", "--images", str(folder), "--out", str(tmp_path), "--epochs", "2"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(tmp_path / "log.jsonl")
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert log[0]["processes"] == 2
    assert np.isfinite([r["loss"] for r in log[1:]]).all()
