"""What DINO and supervised training share: configuration, data on tensors, parameter groups,
k-NN monitoring, checkpoints and the metrics log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from extractors.datasets import FMNIST_MEAN, FMNIST_STD, ImageDataset, load_fashion_mnist
from extractors.knn import extract_features, knn_accuracy
from extractors.registry import PIXELS, load_extractor
from extractors.vit import VisionTransformer, build_vit


class BackboneConfig(BaseModel):
    arch: str = "femto"
    patch_size: int = 4
    img_size: int = 28


class TrainConfig(BaseModel):
    """Fields shared by both recipes; every one is a ``vsearch train`` flag."""

    dataset: str = "fashion-mnist"
    backbone: BackboneConfig = BackboneConfig()
    epochs: int = 30
    batch_size: int = 256
    lr: float = 5e-4  # for a batch of 256; scaled linearly with the batch size as in DINO
    min_lr: float = 1e-6
    warmup_epochs: int = 2
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    seed: int = 0
    threads: int = 2
    train_limit: int = 0  # use only the first N training images (0 = all); for smoke runs and tests
    labels_per_class: int = 0  # use only N seeded images of each class (0 = all): the label-efficiency runs
    knn_every: int = 1  # epochs between k-NN evaluations
    knn_db: int = 10000  # fixed evaluation subset: database images from train ...
    knn_queries: int = 2000  # ... and queries from test
    time_limit_min: float = 0.0  # stop (and save) after this many minutes; 0 = no limit


def load_training_images(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images as a uint8 tensor [N, 3, H, W] and their labels (the DINO loop never reads them)."""
    if cfg.dataset != "fashion-mnist":
        raise ValueError(f"unknown training dataset {cfg.dataset!r}: only fashion-mnist is wired up")
    ds = load_fashion_mnist("train")
    if cfg.train_limit:
        ds = ds.subset(np.arange(min(cfg.train_limit, len(ds))))
    if cfg.labels_per_class:
        ds = ds.subset(labelled_subset(np.asarray(ds.labels), cfg.labels_per_class, cfg.seed))
    return dataset_to_uint8(ds), torch.as_tensor(ds.labels)


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` seeded images of every class: the only labels a label-efficiency run has
    (the same indices serve as the k-NN database when DINO's frozen features are scored with them)."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def dataset_to_uint8(ds: ImageDataset) -> torch.Tensor:
    """An array data set as uint8 [N, 3, H, W]; grey images are replicated to three channels."""
    x = torch.as_tensor(np.asarray(ds.images))
    x = x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous()


class Normalize(nn.Module):
    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_backbone(cfg: BackboneConfig, num_classes: int = 0) -> VisionTransformer:
    return build_vit(cfg.arch, cfg.patch_size, img_size=cfg.img_size, num_classes=num_classes)


def get_params_groups(model: nn.Module) -> list[dict]:
    """Weight decay on weight matrices only, never on biases and norm parameters."""
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (not_regularized if name.endswith(".bias") or param.ndim == 1 else regularized).append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def set_schedules(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """This iteration's learning rate for every group; weight decay only for the regularised group (0)."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if i == 0:
            group["weight_decay"] = weight_decay


def clip_gradients(model: nn.Module, clip: float) -> None:
    """Per-parameter gradient-norm clipping, as in DINO's utils.clip_gradients."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.data.norm(2)
            clip_coef = clip / (norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)


class KnnMonitor:
    """20-NN accuracy of a backbone's CLS embedding on a fixed Fashion-MNIST subset (train db, test queries)."""

    def __init__(self, db: int, queries: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        self.train = train.subset(np.sort(rng.choice(len(train), min(db, len(train)), replace=False)))
        self.test = test.subset(np.sort(rng.choice(len(test), min(queries, len(test)), replace=False)))
        self.norm = Normalize(FMNIST_MEAN, FMNIST_STD)
        self.x_train = self.norm(dataset_to_uint8(self.train).float() / 255)
        self.x_test = self.norm(dataset_to_uint8(self.test).float() / 255)

    @torch.no_grad()
    def __call__(self, backbone: nn.Module, k: int = 20) -> float:
        was_training = backbone.training
        feats_train = extract_features(backbone, self.x_train)
        feats_test = extract_features(backbone, self.x_test)
        backbone.train(was_training)
        return knn_accuracy(feats_train, self.train.labels, feats_test, self.test.labels, k=k)


@torch.no_grad()
def pixels_knn(monitor: KnnMonitor, k: int = 20) -> float:
    """The floor every embedding has to beat: the registry's raw-pixel extractor on the monitor subset."""
    pixels = load_extractor(PIXELS)
    tr, te = pixels(dataset_to_uint8(monitor.train)), pixels(dataset_to_uint8(monitor.test))
    return knn_accuracy(tr, monitor.train.labels, te, monitor.test.labels, k=k)


class MetricsLog:
    """Append-only JSON lines: one record per evaluation, with wall time since the run began."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temp file then rename: a kill mid-save never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Stopwatch:
    """Wall time that carries over a resume: the elapsed time from the checkpoint plus this process's."""

    def __init__(self, already: float = 0.0) -> None:
        self.start = time.perf_counter() - already

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
