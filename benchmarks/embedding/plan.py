"""The embedding benchmark's parameters: the models (the production-shaped ViT-S/16 registered here, our
Fashion-MNIST ViT, EfficientNet-Lite0), the batch sizes, the target, and the served model's own code."""

from __future__ import annotations

from types import ModuleType

from extractors.registry import IMAGENET_MEAN, IMAGENET_STD, REGISTRY, ExtractorSpec, register
from extractors.vit import build_vit

NAME = "embedding"
HEADLINE = "vit_small_p16_224_random"
MODELS = [HEADLINE, "dino_vit_femto_p7_fmnist", "efficientnet_lite0_imagenet"]
QUICK_MODELS = ["dino_vit_femto_p7_fmnist"]
BATCHES = (1, 8, 32)
TARGET_BATCH = 32
TARGET_RATIO = 1.2
METHODS = ("torch", "onnxruntime", "triton")


def register_headline() -> str:
    """The production-shaped ViT-S/16 (224x224, 6 heads, dim 384) with seeded random weights: timing needs the shape,
    not the weights. Registered in this process only, so the export and Triton code paths take it like any model."""
    if HEADLINE not in REGISTRY:
        register(ExtractorSpec(
            name=HEADLINE, family="vit", description="ViT-S/16 at 224x224, random weights (benchmark only)",
            input_size=224, dim=384, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            build=lambda: build_vit("small", 16, img_size=224), weights=lambda: None, trained_on="nothing"))
    return HEADLINE


def served_model_code() -> ModuleType:
    """``export/onnx_cpu.py``: the graph rewrites and session options the served CPU model uses."""
    import export.onnx_cpu

    return export.onnx_cpu

