"""Self-supervised training of a ViT with DINO (Caron et al. 2021): self-distillation with no labels.

The student sees every crop (2 global + N local), the teacher only the 2 global ones; the teacher is an
exponential moving average of the student (cosine momentum schedule); its outputs are centred and
sharpened. Labels are never read: ``KnnMonitor`` alone uses them, to *measure* the embedding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from extractors.augment import DataAugmentationDINO
from extractors.dino_head import DINOHead, MultiCropWrapper
from extractors.dino_loss import DINOLoss
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


class DinoConfig(TrainConfig):
    out_dim: int = 4096  # prototypes; the paper's 65536 is for ImageNet, 10 classes need far fewer
    hidden_dim: int = 1024
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    momentum_teacher: float = 0.996
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 5
    freeze_last_layer: int = 1
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_scale: tuple[float, float] = (0.1, 0.4)
    local_crops_number: int = 6
    local_crop_size: int = 12
    # A backbone state dict (official keys) both networks start from instead of random weights: continues an
    # earlier run under a new recipe (new head, schedules from zero). Empty: random initialisation.
    init_backbone: str = ""


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())


def train_dino(cfg: DinoConfig, out_dir: Path, resume: bool = True) -> dict:
    """Trains (or resumes) into ``out_dir``: ``checkpoint.pth`` (full state), ``log.jsonl`` (metrics),
    ``teacher_backbone.pth`` (the embedding network, official DINO keys). Returns the last log record."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))

    images, _ = load_training_images(cfg)  # labels are discarded on purpose
    normalize = Normalize(FMNIST_MEAN, FMNIST_STD)
    augment = DataAugmentationDINO(cfg.global_crops_scale, cfg.local_crops_scale, cfg.local_crops_number,
                                   cfg.backbone.img_size, cfg.local_crop_size)
    embed_dim = build_backbone(cfg.backbone).embed_dim

    def build() -> MultiCropWrapper:
        return MultiCropWrapper(build_backbone(cfg.backbone), DINOHead(
            embed_dim, cfg.out_dim, cfg.norm_last_layer, hidden_dim=cfg.hidden_dim, bottleneck_dim=cfg.bottleneck_dim))

    student, teacher = build(), build()
    if cfg.init_backbone:
        student.backbone.load_state_dict(torch.load(cfg.init_backbone, map_location="cpu", weights_only=True))
    # deepcopy cannot copy weight_norm modules; a second build plus a state-dict copy is the same thing.
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    ncrops = 2 + cfg.local_crops_number
    dino_loss = DINOLoss(cfg.out_dim, ncrops, cfg.warmup_teacher_temp, cfg.teacher_temp,
                         cfg.warmup_teacher_temp_epochs, cfg.epochs)
    optimizer = torch.optim.AdamW(get_params_groups(student))

    niter_per_ep = max(len(images) // cfg.batch_size, 1)
    lr_schedule = cosine_scheduler(cfg.lr * cfg.batch_size / 256, cfg.min_lr, cfg.epochs, niter_per_ep,
                                   cfg.warmup_epochs)
    wd_schedule = cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, niter_per_ep)
    momentum_schedule = cosine_scheduler(cfg.momentum_teacher, 1.0, cfg.epochs, niter_per_ep)

    log = MetricsLog(out_dir / "log.jsonl")
    ckpt_path = out_dir / "checkpoint.pth"
    start_epoch, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        dino_loss.load_state_dict(state["dino_loss"])
        start_epoch, elapsed = state["epoch"], state["elapsed_s"]
    else:
        log.path.unlink(missing_ok=True)
    clock = Stopwatch(elapsed)
    monitor = KnnMonitor(cfg.knn_db, cfg.knn_queries, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + start_epoch)
    if start_epoch == 0:
        log.write(epoch=0, wall_s=0.0, knn20=monitor(teacher.backbone), loss=None)

    record: dict = {}
    with progress_bar() as bar:
        task = bar.add_task("DINO", total=cfg.epochs * niter_per_ep, completed=start_epoch * niter_per_ep, info="")
        for epoch in range(start_epoch, cfg.epochs):
            student.train()
            perm = torch.randperm(len(images), generator=generator)
            losses = []
            for it_in_ep in range(niter_per_ep):
                it = epoch * niter_per_ep + it_in_ep
                set_schedules(optimizer, lr_schedule[it], wd_schedule[it])
                batch = images[perm[it_in_ep * cfg.batch_size:(it_in_ep + 1) * cfg.batch_size]].float() / 255
                crops = [normalize(c) for c in augment(batch, generator)]
                with torch.no_grad():
                    teacher_output = teacher(crops[:2])
                student_output = student(crops)
                loss = dino_loss(student_output, teacher_output, epoch)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss is {loss.item()} at iteration {it}; stopping")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad:
                    clip_gradients(student, cfg.clip_grad)
                if epoch < cfg.freeze_last_layer:
                    # Not moving the prototypes in the first epoch helps the run start (DINO's trick).
                    for n, p in student.named_parameters():
                        if "last_layer" in n:
                            p.grad = None
                optimizer.step()
                with torch.no_grad():  # EMA update of the teacher
                    m = momentum_schedule[it]
                    for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                        pt.data.mul_(m).add_((1 - m) * ps.detach().data)
                losses.append(loss.item())
                bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {loss.item():.3f}")
                if cfg.time_limit_min and clock.elapsed() > cfg.time_limit_min * 60:
                    break
            stop = bool(cfg.time_limit_min and clock.elapsed() > cfg.time_limit_min * 60)
            record = dict(epoch=epoch + 1, wall_s=round(clock.elapsed(), 1), loss=sum(losses) / len(losses),
                          lr=float(lr_schedule[it]), teacher_temp=float(dino_loss.teacher_temp_schedule[epoch]))
            if (epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs or stop:
                record["knn20"] = monitor(teacher.backbone)
            record["teacher_std"] = teacher_output_std(teacher, crops[:2])
            log.write(**record)
            save_atomic(dict(student=student.state_dict(), teacher=teacher.state_dict(),
                             optimizer=optimizer.state_dict(), dino_loss=dino_loss.state_dict(),
                             epoch=epoch + 1, elapsed_s=clock.elapsed(), config=cfg.model_dump()), ckpt_path)
            save_atomic(teacher.backbone.state_dict(), out_dir / "teacher_backbone.pth")
            if stop:
                break
    return record


@torch.no_grad()
def teacher_output_std(teacher: MultiCropWrapper, crops: list[torch.Tensor]) -> float:
    """Mean per-dimension std of the L2-normalised teacher output: ~0 means DINO collapsed."""
    out = torch.nn.functional.normalize(teacher(crops), dim=-1)
    return float(out.std(dim=0).mean())
