"""What DINO and supervised training share: configuration, data on tensors, parameter groups,
k-NN monitoring, checkpoints and the metrics log."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from extractors.checkpoints import load_backbone, read_state_dict
from extractors.datasets import (
    FMNIST_MEAN,
    FMNIST_STD,
    FolderIndex,
    ImageDataset,
    index_image_folder,
    load_fashion_mnist,
)
from extractors.distributed import Runtime, all_reduce_mean
from extractors.efficientnet_lite import EFFICIENTNET_LITE0_DIM, EfficientNetLite0
from extractors.embedding import ViTCLSEmbedding
from extractors.knn import knn_accuracy
from extractors.normalization import training_normalization
from extractors.registry import PIXELS, REGISTRY, FeatureHead, load_extractor
from extractors.training_data import TrainingImages, decode_for_training, load_folder_pixels
from extractors.vit import build_vit

SKIPPED_FILES = "skipped_files.txt"
EFFICIENTNET = "efficientnet_lite0"  # the one CNN backbone: DINO adapts its ImageNet weights to a domain


class BackboneConfig(BaseModel):
    arch: str = "femto"  # a ViT size (extractors.vit.VIT_SIZES) or efficientnet_lite0
    patch_size: int = 4
    img_size: int = 28


class TrainConfig(BaseModel):
    """Fields shared by both recipes; every one is a ``vsearch train`` flag."""

    dataset: str = "fashion-mnist"
    # A folder of images to train on instead of ``dataset`` (DINO never reads its class sub-folders; supervised
    # training takes its labels from them). Streamed from disk: memory holds the file list and a few batches.
    images: str = ""
    # A folder of labelled images the k-NN monitor queries (e.g. a test split); empty: a held-out sample of the
    # training folder's labelled images. No class sub-folders anywhere: no monitor, the loss alone is logged.
    monitor_images: str = ""
    load_size: int = 0  # decode folder images at this side before cropping (0: img_size)
    workers: int = 1  # DataLoader processes decoding a folder's images
    # Input normalisation (0..1 scale); None: Fashion-MNIST's statistics for it, ImageNet's for a folder.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
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
    checkpoint_every_min: float = 10.0  # also save in the middle of an epoch this often (a resume continues there)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return training_normalization(self.images, self.mean, self.std, self.backbone.arch)

    def knn_due(self, epoch: int, stopped: bool) -> bool:
        """Whether the k-NN monitor measures after ``epoch`` (0-based): every ``knn_every``, the last, a stop."""
        return (epoch + 1) % self.knn_every == 0 or epoch + 1 == self.epochs or stopped

    @property
    def input_size(self) -> int:
        return self.load_size or self.backbone.img_size

    def trained_on(self) -> str:
        return f"folder {self.images}" if self.images else self.dataset


def open_training_images(cfg: TrainConfig, rank: int = 0, world: int = 1) -> TrainingImages:
    """The run's training images: a folder streamed from disk, or Fashion-MNIST in memory."""
    if cfg.images:
        index = index_image_folder(Path(cfg.images), require_images=True)
        if cfg.train_limit:
            index = index.subset(np.arange(min(cfg.train_limit, len(index))))
        if cfg.labels_per_class:
            index = index.subset(labelled_subset(index.labels, cfg.labels_per_class, cfg.seed))
        data = TrainingImages(f"folder:{cfg.images}", cfg.input_size, cfg.batch_size, cfg.seed, index=index,
                              workers=cfg.workers, rank=rank, world=world)
        check_decodable(data)
        return data
    images, labels = load_training_images(cfg)
    return TrainingImages(cfg.dataset, cfg.backbone.img_size, cfg.batch_size, cfg.seed, images=images, labels=labels,
                          rank=rank, world=world)


def load_training_images(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images as a uint8 tensor [N, 3, H, W] and their labels (the DINO loop never reads them)."""
    if cfg.dataset != "fashion-mnist":
        raise ValueError(f"unknown training dataset {cfg.dataset!r}: fashion-mnist, or a folder with --images DIR")
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
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels[labels >= 0])]
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


def build_backbone(cfg: BackboneConfig, num_classes: int = 0) -> nn.Module:
    """The network a recipe trains: a ViT, or EfficientNet-Lite0 whose forward gives its pooled features."""
    if cfg.arch == EFFICIENTNET:
        return EfficientNetBackbone(num_classes)
    return build_vit(cfg.arch, cfg.patch_size, img_size=cfg.img_size, num_classes=num_classes)


class EfficientNetBackbone(EfficientNetLite0):
    """EfficientNet-Lite0 as a DINO backbone: ``forward`` is the 1280-d pooled embedding (a classifier head
    is kept only for supervised training, where ``forward`` gives its logits)."""

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__(num_classes=num_classes or 1000)
        self.classify = num_classes > 0
        self.embed_dim = EFFICIENTNET_LITE0_DIM
        # Channels-last: oneDNN's depthwise convolutions train ~10x faster on a CPU in it (measured: a 32 x 96 px
        # step 0.3 s vs 3-7 s), and a state dict does not record the memory layout.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x) if self.classify else self.forward_features(x)


def embedding_network(model: nn.Module) -> nn.Module:
    """What a trained network embeds with: a ViT's CLS token or a CNN's pooled features, never class logits."""
    if isinstance(model, EfficientNetLite0):
        return FeatureHead(model)
    return ViTCLSEmbedding(model)  # type: ignore[arg-type]


def load_initial_backbone(backbone: nn.Module, source: str) -> None:
    """Starts ``backbone`` from pre-trained weights: a file (a ViT state dict with official DINO / timm keys, our
    checkpoints, or EfficientNet-Lite0's) or a registry name (``efficientnet_lite0_imagenet``). A ViT file at
    another input size has its position embeddings resampled; a file of another architecture is an error that
    says so before training starts."""
    path = Path(source)
    if not path.exists():
        if source not in REGISTRY or REGISTRY[source].weights() is None:
            raise FileNotFoundError(f"--init-backbone {source!r} is neither a file nor a registry extractor with "
                                    "weights")
        path = Path(REGISTRY[source].weights())  # type: ignore[arg-type]
    if isinstance(backbone, EfficientNetLite0):
        state = read_state_dict(path)
        own = backbone.state_dict()
        # A new classifier (a supervised head of another size) starts fresh: the ImageNet one is left out.
        state = {k: v for k, v in state.items()
                 if not (k.startswith("_fc.") and k in own and own[k].shape != v.shape)}
        try:
            missing, unexpected = backbone.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"{path} is not an EfficientNet-Lite0 checkpoint: {e}") from None
        # The ImageNet classifier may be left out or replaced (a new supervised head): everything else must match.
        missing = [k for k in missing if not k.startswith("_fc.")]
        unexpected = [k for k in unexpected if not k.startswith("_fc.")]
        if missing or unexpected:
            raise ValueError(f"{path} is not an EfficientNet-Lite0 checkpoint: missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]}")
        return
    load_backbone(backbone, path, keep_head=False, resample_pos_embed_to_model=True)


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
    """20-NN accuracy of a backbone's embedding (a ViT's CLS token, a CNN's pooled features) on fixed labelled
    images: a database and queries, uint8 [N, 3, S, S], normalised batch by batch (bounded memory)."""

    def __init__(self, db: torch.Tensor, db_labels: np.ndarray, queries: torch.Tensor, query_labels: np.ndarray,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.db, self.db_labels = db, np.asarray(db_labels)
        self.queries, self.query_labels = queries, np.asarray(query_labels)
        self.norm = Normalize(mean, std)

    @classmethod
    def fashion_mnist(cls, db: int, queries: int, seed: int = 0) -> KnnMonitor:
        """Seeded subsets: the database from the training split, the queries from the test split."""
        rng = np.random.default_rng(seed)
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        train = train.subset(np.sort(rng.choice(len(train), min(db, len(train)), replace=False)))
        test = test.subset(np.sort(rng.choice(len(test), min(queries, len(test)), replace=False)))
        return cls(dataset_to_uint8(train), train.labels, dataset_to_uint8(test), test.labels, FMNIST_MEAN,
                   FMNIST_STD)

    @classmethod
    def for_run(cls, cfg: TrainConfig, data: TrainingImages) -> KnnMonitor | None:
        """The monitor of a run, or None when the training folder and ``monitor_images`` have no class folders."""
        if not cfg.images:
            return cls.fashion_mnist(cfg.knn_db, cfg.knn_queries, cfg.seed)
        index: FolderIndex = data.index  # type: ignore[assignment]
        rng = np.random.default_rng(cfg.seed)
        labelled = rng.permutation(np.flatnonzero(index.labels >= 0))
        if cfg.monitor_images:
            queries = index_image_folder(Path(cfg.monitor_images), require_images=True)
            # A query class is the training class of the same folder name; other classes cannot be scored.
            names = {name: i for i, name in enumerate(index.classes)}
            relabel = np.array([names.get(name, -1) for name in queries.classes] + [-1])
            queries.labels = relabel[queries.labels]
            keep = np.flatnonzero(queries.labels >= 0)
            queries = queries.subset(np.sort(rng.permutation(keep)[:cfg.knn_queries]))
            db_idx = labelled[:cfg.knn_db]
        else:
            queries = index.subset(np.sort(labelled[:cfg.knn_queries]))
            db_idx = labelled[cfg.knn_queries:cfg.knn_queries + cfg.knn_db]
        if len(queries) == 0 or len(db_idx) < 20:
            return None
        db = index.subset(np.sort(db_idx))
        x_db, y_db, _ = load_folder_pixels(db, cfg.backbone.img_size, cfg.workers)
        x_q, y_q, _ = load_folder_pixels(queries, cfg.backbone.img_size, cfg.workers)
        return cls(x_db, y_db, x_q, y_q, *cfg.normalization())

    @torch.no_grad()
    def features(self, backbone: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        device = next(backbone.parameters()).device
        out = [F.normalize(backbone(self.norm.to(device)(images[i:i + batch_size].to(device).float() / 255))
                           .float(), dim=1).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, backbone: nn.Module, k: int = 20) -> float:
        was_training = backbone.training
        backbone.eval()
        feats_db, feats_q = self.features(backbone, self.db), self.features(backbone, self.queries)
        backbone.train(was_training)
        return knn_accuracy(feats_db, self.db_labels, feats_q, self.query_labels, k=k)


@torch.no_grad()
def pixels_knn(monitor: KnnMonitor, k: int = 20) -> float:
    """The floor every embedding has to beat: the registry's raw-pixel extractor on the monitor subset."""
    pixels = load_extractor(PIXELS)
    tr, te = pixels(monitor.db), pixels(monitor.queries)
    return knn_accuracy(tr, monitor.db_labels, te, monitor.query_labels, k=k)


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


@dataclass
class Position:
    """Where a run is: ``batch`` batches of epoch ``epoch`` done (0 at an epoch's start), and that epoch's losses."""

    epoch: int = 0
    batch: int = 0
    elapsed_s: float = 0.0
    losses: list[float] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: dict) -> Position:
        # Checkpoints written before mid-epoch saves hold whole epochs only (no "batch").
        return cls(state["epoch"], state.get("batch", 0), state["elapsed_s"], list(state.get("epoch_losses", [])))

    def state(self, clock: Stopwatch) -> dict:
        return dict(epoch=self.epoch, batch=self.batch, elapsed_s=clock.elapsed(), epoch_losses=self.losses)

    def step(self, loss: float) -> None:
        self.batch += 1
        self.losses.append(loss)

    def mean_loss(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.losses else None

    def next_epoch(self) -> None:
        self.epoch, self.batch, self.losses = self.epoch + 1, 0, []


class _Bar:
    def __init__(self, progress: Progress | None, task) -> None:
        self.progress, self.task = progress, task

    def advance(self, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, info=info)


class RunFolder:
    """A training run's folder: ``config.json``, ``log.jsonl``, ``checkpoint.pth``, the weights and
    ``skipped_files.txt`` (images that could not be decoded). Only the main process of a distributed run writes."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, runtime: Runtime) -> None:
        self.dir = Path(out_dir)
        self.cfg, self.runtime = cfg, runtime
        self.metrics = MetricsLog(self.dir / "log.jsonl") if runtime.main else None
        self.checkpoint = self.dir / "checkpoint.pth"
        self.last_save = time.monotonic()
        if runtime.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "config.json").write_text(cfg.model_dump_json(indent=2))

    def resume_state(self) -> dict | None:
        """The checkpoint to continue from, or None. One of another network is an error before any work."""
        if not self.checkpoint.exists():
            return None
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        theirs = BackboneConfig(**state.get("config", {}).get("backbone", {}))
        if theirs != self.cfg.backbone:
            raise ValueError(f"{self.checkpoint} is a checkpoint of {theirs.model_dump()}, not of this run's "
                             f"{self.cfg.backbone.model_dump()}: choose another --out folder, or --no-resume to "
                             "start this one over")
        return state

    def start_fresh(self) -> None:
        if self.metrics is not None:
            self.metrics.path.unlink(missing_ok=True)
            (self.dir / SKIPPED_FILES).unlink(missing_ok=True)

    def log(self, **record) -> None:
        if self.metrics is not None:
            self.metrics.write(**record)

    def save_checkpoint(self, state: dict) -> None:
        if self.runtime.main:
            save_atomic(state, self.checkpoint)
        self.last_save = time.monotonic()

    def save_weights(self, state: dict, name: str) -> None:
        if self.runtime.main:
            save_atomic(state, self.dir / name)

    def end_epoch(self, record: dict, position: Position, stopped: bool, batches_per_epoch: int,
                  save: Callable[[], None], weights: dict, weights_name: str) -> None:
        """Logs the epoch's record, moves on to the next epoch unless the run stopped part-way through this one (the
        resume finishes it), then saves the checkpoint and the weights."""
        if stopped and position.batch < batches_per_epoch:
            record["partial_epoch"] = True
        else:
            position.next_epoch()
        self.log(**record)
        save()
        self.save_weights(weights, weights_name)

    def checkpoint_due(self, cfg: TrainConfig) -> bool:
        return bool(cfg.checkpoint_every_min) and time.monotonic() - self.last_save > cfg.checkpoint_every_min * 60

    def out_of_time(self, cfg: TrainConfig, clock: Stopwatch) -> bool:
        """Past ``time_limit_min``: every process of a distributed run decides together (one stopping alone would
        leave the others waiting in a collective)."""
        if not cfg.time_limit_min:
            return False
        late = torch.tensor([float(clock.elapsed() > cfg.time_limit_min * 60)])
        return bool(all_reduce_mean(late).item() > 0)

    def note_skipped(self, data: TrainingImages) -> int:
        """Appends newly skipped files to ``skipped_files.txt``; returns how many the folder holds in all."""
        path = self.dir / SKIPPED_FILES
        if self.runtime.main and data.skipped:
            known = set(path.read_text().splitlines()) if path.exists() else set()
            new = sorted(data.skipped - known)
            if new:
                with path.open("a") as f:
                    f.write("".join(f"{i}\n" for i in new))
            return len(known) + len(new)
        return len(data.skipped)

    @contextmanager
    def progress(self, description: str, total: int, completed: int) -> Iterator[_Bar]:
        if not self.runtime.main:
            yield _Bar(None, None)
            return
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                      TimeElapsedColumn(), TimeRemainingColumn()) as bar:
            yield _Bar(bar, bar.add_task(description, total=total, completed=completed, info=""))


def check_decodable(data: TrainingImages, sample: int = 16) -> None:
    """A clear error before training starts when a folder's first images cannot be decoded at all."""
    if data.index is None:
        return
    head = data.index.subset(np.arange(min(sample, len(data.index))))
    for path in head.paths:
        try:
            decode_for_training(path, data.size)
            return
        except Exception:  # noqa: BLE001 - judged below: none of the sample decodes
            continue
    raise ValueError(f"none of the first {len(head)} images under {data.index.root} can be decoded "
                     f"(e.g. {head.paths[0]}): is it a folder of images?")
