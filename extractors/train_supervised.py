"""The supervised baseline: the same ViT backbone with a linear ``head`` trained on labels (cross-entropy).

Same crops and budget as DINO's global views, so that the comparison isolates the training signal."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from extractors.augment import supervised_augment
from extractors.datasets import COARSE_OF_CLASS
from extractors.embedding import ViTCLSEmbedding
from extractors.schedules import cosine_scheduler
from extractors.training import (
    FMNIST_MEAN,
    FMNIST_STD,
    KnnMonitor,
    MetricsLog,
    Normalize,
    Stopwatch,
    TrainConfig,
    build_backbone,
    clip_gradients,
    get_params_groups,
    load_training_images,
    save_atomic,
    set_schedules,
)


class SupervisedConfig(TrainConfig):
    num_classes: int = 10
    crops_scale: tuple[float, float] = (0.4, 1.0)
    label_smoothing: float = 0.1
    # "coarse": train on the five groups of COARSE_GROUPS instead of the ten classes (the monitor still scores
    # the fine classes: how much of what the labels never asked for the embedding kept).
    labels: str = "fine"


def train_supervised(cfg: SupervisedConfig, out_dir: Path, resume: bool = True) -> dict:
    """Trains into ``out_dir``: ``checkpoint.pth``, ``log.jsonl`` and ``backbone.pth`` (with its ``head``)."""
    from extractors.train_dino import progress_bar

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    images, labels = load_training_images(cfg)
    if cfg.labels == "coarse":
        labels = torch.as_tensor(COARSE_OF_CLASS)[labels]
    elif cfg.labels != "fine":
        raise ValueError(f"unknown labels {cfg.labels!r}: fine or coarse")
    if int(labels.max()) >= cfg.num_classes:
        raise ValueError(f"labels go up to {int(labels.max())} but the head has {cfg.num_classes} classes")
    normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
    model = build_backbone(cfg.backbone, num_classes=cfg.num_classes)
    optimizer = torch.optim.AdamW(get_params_groups(model))
    niter_per_ep = max(len(images) // cfg.batch_size, 1)
    lr_schedule = cosine_scheduler(cfg.lr * cfg.batch_size / 256, cfg.min_lr, cfg.epochs, niter_per_ep,
                                   cfg.warmup_epochs)
    wd_schedule = cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, niter_per_ep)

    log = MetricsLog(out_dir / "log.jsonl")
    ckpt_path = out_dir / "checkpoint.pth"
    start_epoch, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, elapsed = state["epoch"], state["elapsed_s"]
    else:
        log.path.unlink(missing_ok=True)
    clock = Stopwatch(elapsed)
    monitor = KnnMonitor(cfg.knn_db, cfg.knn_queries, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + start_epoch)
    if start_epoch == 0:
        log.write(epoch=0, wall_s=0.0, knn20=monitor(ViTCLSEmbedding(model)), loss=None)

    record: dict = {}
    with progress_bar() as bar:
        task = bar.add_task("supervised", total=cfg.epochs * niter_per_ep, completed=start_epoch * niter_per_ep,
                            info="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            perm = torch.randperm(len(images), generator=generator)
            losses, correct, seen = [], 0, 0
            for it_in_ep in range(niter_per_ep):
                it = epoch * niter_per_ep + it_in_ep
                set_schedules(optimizer, lr_schedule[it], wd_schedule[it])
                idx = perm[it_in_ep * cfg.batch_size:(it_in_ep + 1) * cfg.batch_size]
                x = normalize(supervised_augment(images[idx].float() / 255, cfg.backbone.img_size,
                                                 cfg.crops_scale, generator))
                logits = model(x)
                loss = F.cross_entropy(logits, labels[idx], label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad:
                    clip_gradients(model, cfg.clip_grad)
                optimizer.step()
                losses.append(loss.item())
                correct += int((logits.argmax(1) == labels[idx]).sum())
                seen += len(idx)
                bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {loss.item():.3f}")
                if cfg.time_limit_min and clock.elapsed() > cfg.time_limit_min * 60:
                    break
            stop = bool(cfg.time_limit_min and clock.elapsed() > cfg.time_limit_min * 60)
            record = dict(epoch=epoch + 1, wall_s=round(clock.elapsed(), 1), loss=sum(losses) / len(losses),
                          train_acc=correct / max(seen, 1), lr=float(lr_schedule[it]))
            if (epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs or stop:
                record["knn20"] = monitor(ViTCLSEmbedding(model))
            log.write(**record)
            save_atomic(dict(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch + 1,
                             elapsed_s=clock.elapsed(), config=cfg.model_dump()), ckpt_path)
            save_atomic(model.state_dict(), out_dir / "backbone.pth")
            if stop:
                break
    return record
