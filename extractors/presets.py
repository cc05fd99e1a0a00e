"""Named training recipes: what ``vsearch train dino|supervised --preset NAME`` starts from.

Measured on 2 CPU cores (AMD EPYC, AVX2): DINO on 28x28 at patch 4 runs at ~90 images/s (the model is
compute-bound at ~50% of the cores' FMA peak), at patch 7 at ~190 images/s; a 60k-image epoch then takes
~5 min, so a session can afford ~20 epochs. ``smoke`` is the one-minute run the tests use.
"""

from __future__ import annotations

from pathlib import Path

from extractors.train_dino import DinoConfig
from extractors.train_supervised import SupervisedConfig
from extractors.training import EFFICIENTNET, BackboneConfig, TrainConfig

FEMTO_P7 = BackboneConfig(arch="femto", patch_size=7, img_size=28)
FEMTO_P4 = BackboneConfig(arch="femto", patch_size=4, img_size=28)
# Folder presets, named <compute>-<network>-<input>: a user's own images, any domain (--images DIR).
FEMTO_P4_32 = BackboneConfig(arch="femto", patch_size=4, img_size=32)  # 64 tokens: 32 px images (CIFAR, signs)
PICO_P8_64 = BackboneConfig(arch="pico", patch_size=8, img_size=64)  # 64 tokens: larger images seen at 64 px
EFFNET_96 = BackboneConfig(arch=EFFICIENTNET, patch_size=0, img_size=96)
SMALL_P16_224 = BackboneConfig(arch="small", patch_size=16, img_size=224)  # ViT-S/16, DINO's own
SMOKE_FOLDER = BackboneConfig(arch="femto", patch_size=8, img_size=32)

DINO_PRESETS: dict[str, DinoConfig] = {
    "fmnist-femto-p7": DinoConfig(
        backbone=FEMTO_P7, epochs=20, batch_size=128, lr=1e-3, warmup_epochs=2, out_dim=2048, hidden_dim=512,
        bottleneck_dim=256, warmup_teacher_temp=0.04, teacher_temp=0.06, warmup_teacher_temp_epochs=5,
        local_crops_number=6, local_crop_size=14, global_crops_scale=(0.4, 1.0), local_crops_scale=(0.1, 0.4),
    ),
    # The committed 11-epoch backbone trained on under the recipe the short search scored best
    # (reports/extractors/dino_recipe_search.md, 0.6555 vs 0.6315 for the old preset): a faster teacher (momentum
    # 0.99 -> 1, temperature 0.04 -> 0.07), 1024 prototypes, global crops (0.5, 1), 8 local crops (0.2, 0.5),
    # batch 64. A new head, so the last layer is frozen for the first epoch again.
    "fmnist-femto-p7-continue": DinoConfig(
        backbone=FEMTO_P7, epochs=30, batch_size=64, lr=1e-3, warmup_epochs=2, out_dim=1024, hidden_dim=512,
        bottleneck_dim=256, momentum_teacher=0.99, warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=5, local_crops_number=8, local_crop_size=14, global_crops_scale=(0.5, 1.0),
        local_crops_scale=(0.2, 0.5), init_backbone="weights/dino_vit_femto_p7_fmnist/teacher_backbone.pth",
        threads=1, knn_every=1,
    ),
    "fmnist-femto-p4": DinoConfig(
        backbone=FEMTO_P4, epochs=10, batch_size=128, lr=1e-3, warmup_epochs=1, out_dim=2048, hidden_dim=512,
        local_crops_number=6, local_crop_size=12,
    ),
    # From scratch on a folder, CPU: small ViTs, the tiny-image multi-crop (Gani et al.: 8 local crops at scale
    # 0.2-0.5, global 0.5-1) and the faster teacher the Fashion-MNIST recipe search chose (momentum 0.99, temperature
    # 0.04 -> 0.07, 1024 prototypes).
    "cpu-vit-femto-p4-32px": DinoConfig(
        backbone=FEMTO_P4_32, epochs=100, batch_size=64, lr=1e-3, warmup_epochs=5, out_dim=1024, hidden_dim=512,
        bottleneck_dim=256, momentum_teacher=0.99, warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=10, local_crops_number=8, local_crop_size=16, global_crops_scale=(0.5, 1.0),
        local_crops_scale=(0.2, 0.5), threads=1, knn_db=5000, knn_queries=1000, knn_every=2,
    ),
    "cpu-vit-pico-p8-64px": DinoConfig(
        backbone=PICO_P8_64, load_size=80, epochs=100, batch_size=64, lr=1e-3, warmup_epochs=5, out_dim=1024,
        hidden_dim=512, bottleneck_dim=256, momentum_teacher=0.99, warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=10, local_crops_number=8, local_crop_size=32, global_crops_scale=(0.4, 1.0),
        local_crops_scale=(0.1, 0.4), threads=1, knn_db=5000, knn_queries=1000, knn_every=2,
    ),
    # Continued pre-training, the cheap way to adapt features to a domain on a CPU: EfficientNet-Lite0's ImageNet
    # weights start student and teacher, a new head, a low learning rate and a slow teacher so that the first
    # epochs (a random head) do not wash the pre-trained features out.
    "cpu-effnet-lite0-adapt-96px": DinoConfig(
        backbone=EFFNET_96, load_size=112, epochs=30, batch_size=32, lr=5e-4, min_lr=1e-6, warmup_epochs=2,
        weight_decay=0.04, weight_decay_end=0.1, out_dim=1024, hidden_dim=512, bottleneck_dim=256,
        momentum_teacher=0.996, warmup_teacher_temp=0.04, teacher_temp=0.06, warmup_teacher_temp_epochs=3,
        local_crops_number=4, local_crop_size=48, global_crops_scale=(0.4, 1.0), local_crops_scale=(0.1, 0.4),
        init_backbone="efficientnet_lite0_imagenet", threads=1, knn_db=5000, knn_queries=1000, knn_every=2,
    ),
    # DINO's ViT-S/16 recipe on one GPU (CUDA and bfloat16 are used when present): 2 x 224 + 8 x 96 crops.
    "gpu-vit-small-p16-224px": DinoConfig(
        backbone=SMALL_P16_224, load_size=256, epochs=100, batch_size=128, lr=5e-4, warmup_epochs=10,
        out_dim=16384, hidden_dim=2048, bottleneck_dim=256, momentum_teacher=0.996, warmup_teacher_temp=0.04,
        teacher_temp=0.07, warmup_teacher_temp_epochs=30, local_crops_number=8, local_crop_size=96,
        global_crops_scale=(0.4, 1.0), local_crops_scale=(0.05, 0.4), threads=8, workers=8, knn_db=10000,
        knn_queries=2000, checkpoint_every_min=5,
    ),
    "smoke-folder": DinoConfig(
        backbone=SMOKE_FOLDER, epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0, out_dim=256, hidden_dim=128,
        bottleneck_dim=64, local_crops_number=2, local_crop_size=16, knn_db=200, knn_queries=50,
        warmup_teacher_temp_epochs=1, freeze_last_layer=0, workers=0, threads=1,
    ),
    "smoke": DinoConfig(
        backbone=FEMTO_P7, epochs=3, batch_size=64, lr=1e-3, warmup_epochs=1, out_dim=512, hidden_dim=256,
        bottleneck_dim=64, local_crops_number=2, local_crop_size=14, train_limit=1536, knn_db=2000,
        knn_queries=500, warmup_teacher_temp_epochs=1, freeze_last_layer=0,
    ),
}

SUPERVISED_PRESETS: dict[str, SupervisedConfig] = {
    "fmnist-femto-p7": SupervisedConfig(backbone=FEMTO_P7, epochs=18, batch_size=128, lr=1e-3, warmup_epochs=2,
                                        weight_decay=0.05, weight_decay_end=0.05),
    "fmnist-femto-p4": SupervisedConfig(backbone=FEMTO_P4, epochs=10, batch_size=128, lr=1e-3, warmup_epochs=1,
                                        weight_decay=0.05, weight_decay_end=0.05),
    # The same ViT, budget and augmentation told only the five coarse groups (extractors/datasets/fashion_mnist.py).
    "fmnist-femto-p7-coarse": SupervisedConfig(backbone=FEMTO_P7, epochs=10, batch_size=128, lr=1e-3,
                                               warmup_epochs=2, weight_decay=0.05, weight_decay_end=0.05,
                                               labels="coarse", num_classes=5, threads=1),
    # Label efficiency: the same ViT trained on 1, 10 or 100 labelled images per class only, for ~300 steps.
    **{f"fmnist-femto-p7-labels-{n}": SupervisedConfig(
        backbone=FEMTO_P7, labels_per_class=n, epochs=epochs, batch_size=128, lr=1e-3, warmup_epochs=epochs // 10,
        weight_decay=0.05, weight_decay_end=0.05, knn_every=epochs, threads=1)
       for n, epochs in ((1, 300), (10, 300), (100, 40))},
    # The same networks and input sizes as the DINO folder presets, trained on the folder's class sub-folders.
    "cpu-vit-femto-p4-32px": SupervisedConfig(backbone=FEMTO_P4_32, epochs=30, batch_size=128, lr=1e-3,
                                              warmup_epochs=3, weight_decay=0.05, weight_decay_end=0.05, threads=1,
                                              knn_db=5000, knn_queries=1000),
    "cpu-vit-pico-p8-64px": SupervisedConfig(backbone=PICO_P8_64, load_size=80, epochs=30, batch_size=128, lr=1e-3,
                                             warmup_epochs=3, weight_decay=0.05, weight_decay_end=0.05, threads=1,
                                             knn_db=5000, knn_queries=1000),
    "cpu-effnet-lite0-finetune-96px": SupervisedConfig(backbone=EFFNET_96, load_size=112, epochs=10, batch_size=32,
                                                       lr=2e-4, warmup_epochs=1, weight_decay=0.05,
                                                       weight_decay_end=0.05, threads=1, knn_db=5000, knn_queries=1000,
                                                       init_backbone="efficientnet_lite0_imagenet"),
    "gpu-vit-small-p16-224px": SupervisedConfig(backbone=SMALL_P16_224, load_size=256, epochs=100, batch_size=256,
                                                lr=5e-4, warmup_epochs=5, weight_decay=0.05, weight_decay_end=0.05,
                                                threads=8, workers=8, checkpoint_every_min=5),
    "smoke-folder": SupervisedConfig(backbone=SMOKE_FOLDER, epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0,
                                     knn_db=200, knn_queries=50, workers=0, threads=1),
    "smoke": SupervisedConfig(backbone=FEMTO_P7, epochs=2, batch_size=64, lr=1e-3, warmup_epochs=0,
                              train_limit=3000, knn_db=2000, knn_queries=500),
}


def describe(name: str, cfg: TrainConfig) -> tuple[str, str, str, str, str]:
    """(network, input, epochs, batch, what it is for) of a preset, for ``vsearch train presets``."""
    b = cfg.backbone
    network = "EfficientNet-Lite0" if b.arch == EFFICIENTNET else f"ViT {b.arch}/{b.patch_size}"
    init = getattr(cfg, "init_backbone", "")
    network += f" from {Path(init).parent.name or init}" if init else ""
    use = {"gpu": "one GPU", "cpu": "2 CPU cores", "smoke": "tests"}.get(name.split("-")[0], "2 CPU cores")
    data = "Fashion-MNIST" if name.startswith(("fmnist", "smoke")) and "folder" not in name else "--images DIR"
    return network, f"{b.img_size} px", str(cfg.epochs), str(cfg.batch_size), f"{use}, {data}"
