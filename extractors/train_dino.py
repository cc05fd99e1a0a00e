"""Self-supervised training of a ViT with DINO (Caron et al. 2021): self-distillation with no labels.

The student sees every crop (2 global + N local), the teacher only the 2 global ones; the teacher is an
exponential moving average of the student (cosine momentum schedule); its outputs are centred and
sharpened. Labels are never read: ``KnnMonitor`` alone uses them, to *measure* the embedding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from extractors.augment import DataAugmentationDINO
from extractors.dino_head import DINOHead, MultiCropWrapper
from extractors.dino_loss import DINOLoss
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
    get_params_groups,
    load_initial_backbone,
    open_training_images,
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
    # Pre-trained weights both networks start from instead of random ones (continued pre-training: a new head,
    # schedules from zero): a ViT state dict (official DINO / timm keys, an earlier run), an EfficientNet-Lite0
    # file, or a registry name such as efficientnet_lite0_imagenet. Empty: random initialisation.
    init_backbone: str = ""


def train_dino(cfg: DinoConfig, out_dir: Path, resume: bool = True) -> dict:
    """Trains (or resumes) into ``out_dir``: ``checkpoint.pth`` (full state, also saved mid-epoch every
    ``checkpoint_every_min``), ``log.jsonl`` (metrics), ``teacher_backbone.pth`` (the embedding network, official
    DINO keys for a ViT). Under ``torchrun`` each process trains on its slice of every batch. Returns the last log
    record."""
    runtime = init_runtime()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    run = RunFolder(out_dir, cfg, runtime)
    data = open_training_images(cfg, runtime.rank, runtime.world)  # labels are never read below
    normalize = Normalize(*cfg.normalization()).to(runtime.device)
    augment = DataAugmentationDINO(cfg.global_crops_scale, cfg.local_crops_scale, cfg.local_crops_number,
                                   cfg.backbone.img_size, cfg.local_crop_size)
    embed_dim = build_backbone(cfg.backbone).embed_dim

    def build() -> MultiCropWrapper:
        return MultiCropWrapper(build_backbone(cfg.backbone), DINOHead(
            embed_dim, cfg.out_dim, cfg.norm_last_layer, hidden_dim=cfg.hidden_dim, bottleneck_dim=cfg.bottleneck_dim))

    student, teacher = build(), build()
    if cfg.init_backbone:
        load_initial_backbone(student.backbone, cfg.init_backbone)
    # deepcopy cannot copy weight_norm modules; a second build plus a state-dict copy is the same thing.
    teacher.load_state_dict(student.state_dict())
    student.to(runtime.device)
    teacher.to(runtime.device)
    for p in teacher.parameters():
        p.requires_grad = False
    ncrops = 2 + cfg.local_crops_number
    dino_loss = DINOLoss(cfg.out_dim, ncrops, cfg.warmup_teacher_temp, cfg.teacher_temp,
                         cfg.warmup_teacher_temp_epochs, cfg.epochs).to(runtime.device)
    optimizer = torch.optim.AdamW(get_params_groups(student))

    niter_per_ep = data.batches_per_epoch
    lr_schedule = cosine_scheduler(cfg.lr * cfg.batch_size / 256, cfg.min_lr, cfg.epochs, niter_per_ep,
                                   cfg.warmup_epochs)
    wd_schedule = cosine_scheduler(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, niter_per_ep)
    momentum_schedule = cosine_scheduler(cfg.momentum_teacher, 1.0, cfg.epochs, niter_per_ep)

    position = Position()
    state = run.resume_state() if resume else None
    if state is not None:
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        dino_loss.load_state_dict(state["dino_loss"])
        position = Position.from_state(state)
    else:
        run.start_fresh()
    clock = Stopwatch(position.elapsed_s)
    monitor = KnnMonitor.for_run(cfg, data) if runtime.main else None
    generator = torch.Generator().manual_seed(cfg.seed + 1000 * position.epoch + position.batch)
    if position.epoch == 0 and position.batch == 0:
        run.log(epoch=0, wall_s=0.0, knn20=monitor(teacher.backbone) if monitor else None, loss=None,
                processes=runtime.world)
    trained = DistributedDataParallel(student) if runtime.distributed else student
    stopped = False

    def save() -> None:
        run.save_checkpoint(dict(student=student.state_dict(), teacher=teacher.state_dict(),
                                 optimizer=optimizer.state_dict(), dino_loss=dino_loss.state_dict(),
                                 **position.state(clock), config=cfg.model_dump()))

    record: dict = {}
    crops: list[torch.Tensor] = []
    with run.progress("DINO", cfg.epochs * niter_per_ep, position.epoch * niter_per_ep + position.batch) as bar:
        for epoch in range(position.epoch, cfg.epochs):
            student.train()
            it = max(epoch * niter_per_ep + position.batch - 1, 0)
            for batch, _ in data.epoch(epoch, position.batch):
                it = epoch * niter_per_ep + position.batch
                set_schedules(optimizer, lr_schedule[it], wd_schedule[it])
                batch = batch.to(runtime.device, non_blocking=True).float() / 255
                crops = [normalize(c) for c in augment(batch, generator.manual_seed(cfg.seed + it))]
                with runtime.autocast():
                    with torch.no_grad():
                        teacher_output = teacher(crops[:2])
                    student_output = trained(crops)
                    loss = dino_loss(student_output.float(), teacher_output.float(), epoch)
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
                position.step(loss.item())
                bar.advance(f"epoch {epoch + 1} loss {loss.item():.3f}")
                stopped = run.out_of_time(cfg, clock)
                if stopped:
                    break
                if run.checkpoint_due(cfg):
                    save()
            record = dict(epoch=epoch + 1, wall_s=round(clock.elapsed(), 1), loss=position.mean_loss(),
                          lr=float(lr_schedule[it]),
                          teacher_temp=float(dino_loss.teacher_temp_schedule[epoch]),
                          skipped_files=run.note_skipped(data))
            if monitor and cfg.knn_due(epoch, stopped):
                record["knn20"] = monitor(teacher.backbone)
            if crops:
                record["teacher_std"] = teacher_output_std(teacher, crops[:2])
            run.end_epoch(record, position, stopped, niter_per_ep, save, teacher.backbone.state_dict(),
                          "teacher_backbone.pth")
            if stopped:
                break
    shutdown()
    return record


@torch.no_grad()
def teacher_output_std(teacher: MultiCropWrapper, crops: list[torch.Tensor]) -> float:
    """Mean per-dimension std of the L2-normalised teacher output: ~0 means DINO collapsed."""
    out = torch.nn.functional.normalize(teacher(crops), dim=-1)
    return float(out.std(dim=0).mean())
