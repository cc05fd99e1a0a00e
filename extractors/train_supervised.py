"""The supervised baseline: the same ViT backbone with a linear ``head`` trained on labels (cross-entropy).

Same crops and budget as DINO's global views, so that the comparison isolates the training signal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from extractors.augment import supervised_augment
from extractors.datasets import COARSE_OF_CLASS
from extractors.distributed import init_runtime, shutdown
from extractors.schedules import cosine_scheduler
from extractors.training import (
    KnnMonitor,
    Normalize,
    Position,
    RunFolder,
    Stopwatch,
    TrainConfig,
    build_backbone,
    clip_gradients,
    embedding_network,
    get_params_groups,
    load_initial_backbone,
    open_training_images,
    set_schedules,
)


class SupervisedConfig(TrainConfig):
    num_classes: int = 10
    crops_scale: tuple[float, float] = (0.4, 1.0)
    label_smoothing: float = 0.1
    # "coarse": train on the five groups of COARSE_GROUPS instead of the ten classes (the monitor still scores
    # the fine classes: how much of what the labels never asked for the embedding kept).
    labels: str = "fine"
    # Pre-trained weights to fine-tune from (a ViT state dict, an EfficientNet-Lite0 file or a registry name); the
    # classifier head is always new. Empty: random initialisation.
    init_backbone: str = ""


def train_supervised(cfg: SupervisedConfig, out_dir: Path, resume: bool = True) -> dict:
    """Trains into ``out_dir``: ``checkpoint.pth``, ``log.jsonl`` and ``backbone.pth`` (with its ``head``). A
    folder's labels are its class sub-folders; the head gets one output per class unless ``num_classes`` is set."""
    runtime = init_runtime()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    data = open_training_images(cfg, runtime.rank, runtime.world)
    labels_of = training_labels(cfg, data)
    if cfg.images and cfg.num_classes != len(data.classes):
        cfg = cfg.model_copy(update={"num_classes": len(data.classes)})  # the folder decides; config.json says so
    run = RunFolder(out_dir, cfg, runtime)
    normalize = Normalize(*cfg.normalization()).to(runtime.device)
    model = build_backbone(cfg.backbone, num_classes=cfg.num_classes)
    if cfg.init_backbone:
        load_initial_backbone(model, cfg.init_backbone)
    model.to(runtime.device)
    optimizer = torch.optim.AdamW(get_params_groups(model))
    niter_per_ep = data.batches_per_epoch
    lr_schedule = cosine_scheduler(cfg.lr * cfg.batch_size / 256, cfg.min_lr, cfg.epochs, niter_per_ep,
                                   cfg.warmup_epochs)
    wd_schedule = cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, niter_per_ep)

    position = Position()
    state = run.resume_state() if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        position = Position.from_state(state)
    else:
        run.start_fresh()
    clock = Stopwatch(position.elapsed_s)
    monitor = KnnMonitor.for_run(cfg, data) if runtime.main else None
    generator = torch.Generator()
    if position.epoch == 0 and position.batch == 0:
        run.log(epoch=0, wall_s=0.0, knn20=monitor(embedding_network(model)) if monitor else None, loss=None,
                processes=runtime.world)
    trained = DistributedDataParallel(model) if runtime.distributed else model
    stopped, correct, seen = False, 0, 0

    def save() -> None:
        run.save_checkpoint(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                 **position.state(clock), config=cfg.model_dump()))

    record: dict = {}
    with run.progress("supervised", cfg.epochs * niter_per_ep, position.epoch * niter_per_ep + position.batch) as bar:
        for epoch in range(position.epoch, cfg.epochs):
            model.train()
            it = max(epoch * niter_per_ep + position.batch - 1, 0)
            for images, labels in data.epoch(epoch, position.batch):
                it = epoch * niter_per_ep + position.batch
                set_schedules(optimizer, lr_schedule[it], wd_schedule[it])
                labels = labels_of(labels).to(runtime.device)
                x = normalize(supervised_augment(images.to(runtime.device).float() / 255, cfg.backbone.img_size,
                                                 cfg.crops_scale, generator.manual_seed(cfg.seed + it)))
                with runtime.autocast():
                    logits = trained(x)
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad:
                    clip_gradients(model, cfg.clip_grad)
                optimizer.step()
                position.step(loss.item())
                correct += int((logits.argmax(1) == labels).sum())
                seen += len(labels)
                bar.advance(f"epoch {epoch + 1} loss {loss.item():.3f}")
                stopped = run.out_of_time(cfg, clock)
                if stopped:
                    break
                if run.checkpoint_due(cfg):
                    save()
            record = dict(epoch=epoch + 1, wall_s=round(clock.elapsed(), 1), loss=position.mean_loss(),
                          train_acc=correct / max(seen, 1), lr=float(lr_schedule[it]),
                          skipped_files=run.note_skipped(data))
            correct = seen = 0
            if monitor and cfg.knn_due(epoch, stopped):
                record["knn20"] = monitor(embedding_network(model))
            run.end_epoch(record, position, stopped, niter_per_ep, save, model.state_dict(), "backbone.pth")
            if stopped:
                break
    shutdown()
    return record


def training_labels(cfg: SupervisedConfig, data) -> Callable[[torch.Tensor], torch.Tensor]:
    """How a batch's labels become the head's targets; a folder without class sub-folders cannot train on labels."""
    if cfg.images:
        labels = data.label_array()
        if not data.classes or (labels < 0).any():
            unlabelled = int((labels < 0).sum())
            raise ValueError(f"supervised training takes its labels from class sub-folders of {cfg.images}: "
                             + (f"{unlabelled} images lie at its root, outside any class folder" if data.classes
                                else "it has none (put each class's images in a folder of its own)"))
        if cfg.labels != "fine":
            raise ValueError(f"labels {cfg.labels!r} apply to Fashion-MNIST only; a folder's labels are its folders")
        return lambda y: y
    if cfg.labels == "coarse":
        coarse = torch.as_tensor(COARSE_OF_CLASS)
        return lambda y: coarse[y]
    if cfg.labels != "fine":
        raise ValueError(f"unknown labels {cfg.labels!r}: fine or coarse")
    if int(data.labels.max()) >= cfg.num_classes:
        raise ValueError(f"labels go up to {int(data.labels.max())} but the head has {cfg.num_classes} classes")
    return lambda y: y
