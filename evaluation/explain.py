"""Why an extractor sees what it sees: ViT self-attention maps and Grad-CAM, as PNG overlays.

- ``vit_attention``: the last block's CLS-to-patch self-attention of every head, upsampled (nearest, one
  patch = one block of pixels, as in the DINO paper's figures) over the image, plus DINO's thresholded mask:
  per head, the smallest set of patches holding 60% of the attention mass (``attention_mass_mask``, the same
  computation as DINO's ``visualize_attention.py``).
- ``vit_gradcam``: Grad-CAM for a ViT with a classification ``head`` (our supervised ViT) on its predicted
  class. The target activation is the *input* of the last block's attention (``blocks[-1].norm1``'s output),
  the layer pytorch-grad-cam uses for ViTs: the last block's *output* patch tokens cannot be used, because the
  head only reads the CLS token after a per-token LayerNorm, so their gradient is exactly zero.
- ``cnn_gradcam``: Grad-CAM for EfficientNet on the predicted ImageNet class, hooking ``last_conv``
  ([B, 1280, 7, 7] at 224 px).

``explain(image, model, out_dir)`` writes the PNGs for whatever the model supports and returns their paths:
it is what ``vsearch explain IMAGE --model NAME --out DIR`` calls. The raw-pixel floor has nothing to explain
(``explainable``). Images reach the model through the gateway's resize (``extractors.imaging``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from evaluation.figures import save_figure
from extractors.datasets import FASHION_MNIST_CLASSES
from extractors.imaging import array_to_model_input, to_model_input
from extractors.registry import ExtractorSpec, get_spec, load_extractor, load_network


@dataclass
class Explanation:
    image: np.ndarray  # HxWx3 uint8: what the model saw (resized square to its input)
    maps: np.ndarray  # [K, H, W] float in [0, 1]: one map per head (attention) or one (Grad-CAM)
    titles: list[str]
    kind: str  # "attention" or "gradcam"
    mask: np.ndarray | None = None  # [K, H, W] bool: DINO's 60%-mass mask per head (attention only)
    mean_mask: np.ndarray | None = None  # [H, W] bool: the same mask for the heads' mean attention
    predicted: str = ""


def explainable(model: str) -> bool:
    """Whether ``model`` has anything to show: self-attention and Grad-CAM (ViTs) or Grad-CAM (CNNs)."""
    return get_spec(model).family in ("vit", "cnn")


def _model_input(image, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """A path, a PIL image or an HxW / HxWx3 uint8 array -> uint8 [1, 3, size, size] and, as HxWx3, what the
    model sees."""
    if isinstance(image, str | Path):
        image = Image.open(image)
    chw = to_model_input(image, size) if isinstance(image, Image.Image) else array_to_model_input(image, size)
    return torch.from_numpy(chw)[None], chw.transpose(1, 2, 0)


def _normalised_input(image, spec: ExtractorSpec) -> tuple[torch.Tensor, np.ndarray]:
    """What the bare network takes (float, normalised with the spec's statistics) and what it sees."""
    x, seen = _model_input(image, spec.input_size)
    return (x.float() - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1), seen


def _top_class_gradient(net: nn.Module, layer: nn.Module, x: torch.Tensor):
    """Runs ``net`` on one image and backpropagates its top logit: the logits, the top class, and ``layer``'s
    output and its gradient (batch dimension dropped)."""
    store = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["act"] = out

    handle = layer.register_forward_hook(hook)
    try:
        logits = net(x)
    finally:
        handle.remove()
    cls = int(logits.argmax(1))
    net.zero_grad()
    logits[0, cls].backward()
    return logits, cls, store["act"][0].detach(), store["act"].grad[0]


def attention_mass_mask(attn: torch.Tensor, keep: float = 0.6) -> torch.Tensor:
    """[heads, N] attention -> [heads, N] bool: the top patches whose attention sums to ``keep`` of the total."""
    val, idx = torch.sort(attn, dim=1)
    val = val / val.sum(dim=1, keepdim=True)
    cum = torch.cumsum(val, dim=1)
    th = cum > (1 - keep)
    out = torch.zeros_like(th)
    out.scatter_(1, idx, th)
    return out


def _normalise(maps: torch.Tensor) -> np.ndarray:
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp(min=1e-12)).view_as(maps).numpy()


@torch.no_grad()
def vit_attention(image, model: str, keep: float = 0.6) -> Explanation:
    spec = get_spec(model)
    if spec.family != "vit":
        raise ValueError(f"{model} is not a ViT: use cnn_gradcam")
    net = load_extractor(model, with_attention=True)
    x, seen = _model_input(image, spec.input_size)
    _, attn = net(x)  # [1, heads, N]
    attn = attn[0]
    side = int(round(attn.shape[1] ** 0.5))
    patch = spec.input_size // side
    grid = attn.view(-1, 1, side, side)
    up = F.interpolate(grid, scale_factor=patch, mode="nearest")[:, 0]
    mask = attention_mass_mask(attn, keep).view(-1, 1, side, side).float()
    mask_up = F.interpolate(mask, scale_factor=patch, mode="nearest")[:, 0] > 0.5
    mean_mask = attention_mass_mask(attn.mean(0, keepdim=True), keep).view(1, 1, side, side).float()
    mean_up = F.interpolate(mean_mask, scale_factor=patch, mode="nearest")[0, 0] > 0.5
    titles = [f"head {h}" for h in range(len(up))]
    return Explanation(seen, _normalise(up), titles, "attention", mask_up.numpy(), mean_up.numpy())


def vit_gradcam(image, model: str) -> Explanation:
    spec = get_spec(model)
    net = load_network(model)
    if not isinstance(net.head, torch.nn.Linear):
        raise ValueError(f"{model} has no classification head: Grad-CAM needs class logits")
    x, seen = _normalised_input(image, spec)
    logits, cls, act, grad = _top_class_gradient(net, net.blocks[-1].norm1, x)
    act, grad = act[1:], grad[1:]  # patch tokens [N, D]
    cam = F.relu((act * grad.mean(0)).sum(-1))
    side = int(round(cam.numel() ** 0.5))
    up = F.interpolate(cam.view(1, 1, side, side), size=seen.shape[:2], mode="bilinear", align_corners=False)[0]
    names = FASHION_MNIST_CLASSES if logits.shape[1] == len(FASHION_MNIST_CLASSES) else None
    label = names[cls] if names else f"class {cls}"
    return Explanation(seen, _normalise(up), [f"Grad-CAM: {label}"], "gradcam", predicted=label)


def cnn_gradcam(image, model: str = "efficientnet_lite0_imagenet") -> Explanation:
    spec = get_spec(model)
    net = load_network(model)
    x, seen = _normalised_input(image, spec)
    _, cls, act, grad = _top_class_gradient(net, net.last_conv, x)  # act, grad: [C, h, w]
    cam = F.relu((act * grad.mean((1, 2))[:, None, None]).sum(0))
    up = F.interpolate(cam[None, None], size=seen.shape[:2], mode="bilinear", align_corners=False)[0]
    label = f"ImageNet class {cls}"
    return Explanation(seen, _normalise(up), [f"Grad-CAM: {label}"], "gradcam", predicted=label)


def explanations(image, model: str) -> list[Explanation]:
    """Every explanation the model supports: attention (+ Grad-CAM with a head) for ViTs, Grad-CAM for CNNs."""
    spec = get_spec(model)
    if not explainable(model):
        raise ValueError(f"{model} ({spec.family}) has neither self-attention nor a layer for Grad-CAM")
    if spec.family != "vit":
        return [cnn_gradcam(image, model)]
    out = [vit_attention(image, model)]
    if spec.labels_used and isinstance(load_network(model).head, torch.nn.Linear):
        out.append(vit_gradcam(image, model))
    return out


def save_overlay(exp: Explanation, path: Path, title: str = "") -> Path:
    """One PNG: the image, then each map overlaid (and DINO's 60% mask for attention)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 1 + len(exp.maps) + (1 if exp.mask is not None else 0)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.2), squeeze=False)
    axes = axes[0]
    axes[0].imshow(exp.image)
    axes[0].set_title("input", fontsize=8)
    for ax, m, t in zip(axes[1:], exp.maps, exp.titles, strict=False):
        ax.imshow(exp.image)
        ax.imshow(m, cmap="jet", alpha=0.5, interpolation="nearest" if exp.kind == "attention" else "bilinear")
        ax.set_title(t, fontsize=8)
    if exp.mask is not None:
        keep = exp.mean_mask if exp.mean_mask is not None else exp.mask.any(0)
        shown = exp.image.astype(np.float32) * 0.6
        shown[keep] = shown[keep] * 0.4 / 0.6 + np.array([255.0, 140.0, 0.0]) * 0.6  # kept patches tinted orange
        axes[-1].imshow(shown.clip(0, 255).astype(np.uint8))
        axes[-1].set_title(f"60% mass ({int(keep.mean() * 100)}% of area)", fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def explain(image, model: str, out_dir: Path, stem: str | None = None) -> list[Path]:
    """Writes ``<stem>_<model>_<kind>.png`` for each explanation of ``image`` by ``model``; returns the paths."""
    stem = stem or (Path(image).stem if isinstance(image, str | Path) else "image")
    paths = []
    for exp in explanations(image, model):
        title = f"{model}: {'last-block CLS attention per head' if exp.kind == 'attention' else exp.titles[0]}"
        paths.append(save_overlay(exp, Path(out_dir) / f"{stem}_{model}_{exp.kind}.png", title))
    return paths
