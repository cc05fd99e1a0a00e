"""Does the CLS token look at the garment? Attention on the object, measured against a known foreground.

Fashion-MNIST garments sit on a black background, so the foreground is known: ``fg = pixel > threshold``.
Half the test pixels are exactly 0; the values 1..5 that follow (~2.6% of the pixels) fall off smoothly and
sit on the garments' anti-aliased edges (only 0.4% of the non-zero pixels have no non-zero neighbour), so there
is no JPEG-like background noise and the default threshold is 0 (``background_stats`` measures this).

For each ViT: the last block's CLS -> patch self-attention, averaged over the heads, over the 4 x 4 grid of
7 x 7 patches, renormalised to sum 1 over the patches (the CLS token's attention to itself is dropped and
reported as ``mass_on_patches``). Per image:

- ``fraction_on_object`` = sum over patches of attention(patch) x (fraction of the patch's pixels in fg);
  ``uniform_baseline`` is what uniform attention would score: the mean foreground fraction of the patches.
- ``iou_mass60``: IoU of DINO's 60%-mass patch mask (the fewest patches holding >= 60% of the attention,
  ``evaluation.explain.attention_mass_mask``) with the garment's patch mask (foreground fraction >= 0.5).
  The IoU depends on the mask's size (near-uniform attention needs 10 of 16 patches, the garment covers ~8), so
  ``iou_mass60_shuffled`` gives its chance level: the same attention values permuted over the patches.

Averages over ``n_images`` seeded test images. ``save_attention_grid`` draws image | each model's attention |
garment mask for a few of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from evaluation.explain import attention_mass_mask
from evaluation.figures import save_figure
from evaluation.protocol import to_square_uint8
from evaluation.semantic_bias import load_data, weights_info, weights_missing
from extractors.registry import get_spec, load_extractor

DEFAULT_EXTRACTORS = ["dino_vit_femto_p7_fmnist", "supervised_vit_femto_p7_fmnist",
                      "supervised_coarse_vit_femto_p7_fmnist", "random_vit_femto_p7_fmnist"]
FG_THRESHOLD = 0  # foreground = pixel > 0 (see the module docstring)
KEEP = 0.6
GARMENT_PATCH_FG = 0.5
SEED = 0
QUICK_IMAGES = 100


def foreground(images: np.ndarray, threshold: int = FG_THRESHOLD) -> np.ndarray:
    """uint8 [B, H, W] -> bool [B, H, W]: the garment's pixels."""
    return np.asarray(images) > threshold


def patch_fractions(fg: np.ndarray, patch: int) -> np.ndarray:
    """bool [B, H, W] -> float [B, (H / patch) * (W / patch)]: each patch's foreground fraction, patches in the
    ViT's token order (row-major)."""
    b, h, w = fg.shape
    g = fg.reshape(b, h // patch, patch, w // patch, patch).astype(np.float64)
    return g.mean(axis=(2, 4)).reshape(b, -1)


def grid_patch(input_size: int, n_patches: int) -> int:
    """The patch side of a square ``input_size`` image cut into ``n_patches`` square patches."""
    side = int(round(n_patches ** 0.5))
    if side * side != n_patches or input_size % side:
        raise ValueError(f"{n_patches} patches do not tile a {input_size} px square")
    return input_size // side


def fraction_on_object(attn: np.ndarray, fg_frac: np.ndarray) -> np.ndarray:
    """Per image: sum_p attn[p] * fg_frac[p], with ``attn`` [B, N] renormalised to sum 1 over the patches."""
    attn = np.asarray(attn, dtype=np.float64)
    attn = attn / attn.sum(axis=1, keepdims=True)
    return (attn * fg_frac).sum(axis=1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row IoU of two bool masks [B, N] (1 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    inter, union = (a & b).sum(axis=1), (a | b).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mass_mask(attn: np.ndarray, keep: float = KEEP) -> np.ndarray:
    """[B, N] attention -> [B, N] bool: DINO's mask (the fewest top patches holding ``keep`` of the mass)."""
    return attention_mass_mask(torch.as_tensor(np.asarray(attn, dtype=np.float64)), keep).numpy()


@torch.no_grad()
def cls_attention(name: str, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Last-block CLS -> patch attention of ViT ``name`` on uint8 [B, H, W] images: ([B, heads, N] as the
    softmax gave it, summing to < 1 over patches; [B, N] head mean renormalised to sum 1)."""
    spec = get_spec(name)
    model = load_extractor(name, with_attention=True)
    chunks = []
    for i in range(0, len(images), batch_size):
        _, attn = model(to_square_uint8(images[i:i + batch_size], spec.input_size))
        chunks.append(attn.double())
    raw = torch.cat(chunks).numpy()
    mean = raw.mean(axis=1)
    return raw, mean / mean.sum(axis=1, keepdims=True)


def shuffled(attn: np.ndarray, seed: int = SEED) -> np.ndarray:
    """``attn`` [B, N] with each row's values permuted over the patches (seeded): the same attention, placed at
    random. Its 60%-mass mask has the same size as the real one, so its IoU is the chance level for that size."""
    rng = np.random.default_rng(seed)
    return np.take_along_axis(attn, np.argsort(rng.random(attn.shape), axis=1), axis=1)


def background_stats(images: np.ndarray) -> dict:
    """How clean the background is: fractions of pixels that are exactly 0, 1..5, and > 0."""
    x = np.asarray(images)
    return {"pixels_exactly_0": float((x == 0).mean()), "pixels_1_to_5": float(((x >= 1) & (x <= 5)).mean()),
            "pixels_above_0": float((x > 0).mean())}


def sample_indices(n_test: int, n_images: int, seed: int = SEED) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n_test, size=min(n_images, n_test), replace=False))


def attention_on_object(extractors: list[str] | None = None, n_images: int = 1000, quick: bool = False,
                        seed: int = SEED, threshold: int = FG_THRESHOLD, data: dict | None = None) -> dict:
    """``{name: {"fraction_on_object", "iou_mass60", "iou_mass60_shuffled", "uniform_baseline",
    "per_head_fraction_on_object", "mass_on_patches", "mass60_patches", "n_images"}}`` (``{"skipped": why}`` for
    missing weights) and ``"_meta"``: threshold, background statistics, garment patch count. ``quick``: 100 images."""
    data = load_data(data)
    test = data["test"]
    idx = sample_indices(len(test), QUICK_IMAGES if quick else n_images, seed)
    images = test.images[idx]
    out: dict = {}
    meta: dict = {"n_images": len(idx), "seed": seed, "fg_threshold": threshold, "keep": KEEP,
                  "garment_patch_fg": GARMENT_PATCH_FG, "background": background_stats(images)}
    frac_cache: dict[tuple[int, int], np.ndarray] = {}
    for name in extractors or DEFAULT_EXTRACTORS:
        spec = get_spec(name)
        if spec.family != "vit":
            out[name] = {"skipped": f"{name} is not a ViT: no self-attention"}
            continue
        note = weights_missing(name)
        if note:
            out[name] = {"skipped": note}
            continue
        t0 = time.perf_counter()
        raw, attn = cls_attention(name, images)
        key = (spec.input_size, raw.shape[2])
        if key not in frac_cache:  # the mask at the model's input (a no-op resize for the 28 px ViTs)
            seen = to_square_uint8(images, spec.input_size)[:, 0].numpy()
            frac_cache[key] = patch_fractions(foreground(seen, threshold), grid_patch(spec.input_size, raw.shape[2]))
        fg_frac = frac_cache[key]
        heads = raw / raw.sum(axis=2, keepdims=True)
        garment = fg_frac >= GARMENT_PATCH_FG
        mask = mass_mask(attn)
        out[name] = {
            "fraction_on_object": float(fraction_on_object(attn, fg_frac).mean()),
            "iou_mass60": float(mask_iou(mask, garment).mean()),
            "iou_mass60_shuffled": float(mask_iou(mass_mask(shuffled(attn, seed)), garment).mean()),
            "uniform_baseline": float(fg_frac.mean()),
            "per_head_fraction_on_object": [float(fraction_on_object(heads[:, h], fg_frac).mean())
                                            for h in range(heads.shape[1])],
            "mass_on_patches": float(raw.mean(axis=1).sum(axis=1).mean()),
            "mass60_patches": float(mask.sum(axis=1).mean()),
            "n_images": len(idx), **weights_info(name), "wall_s": round(time.perf_counter() - t0, 1),
        }
        meta.setdefault("garment_patches", float(garment.sum(axis=1).mean()))
    out["_meta"] = meta
    return out


def save_attention_grid(path: Path, extractors: list[str] | None = None, n: int = 6, seed: int = SEED,
                        threshold: int = FG_THRESHOLD, data: dict | None = None) -> Path:
    """A PNG, one row per image: the image | each ViT's head-mean attention (nearest-upsampled patches, with
    its fraction on the object) | the garment mask
    (fg pixels grey, the garment patches tinted blue). For the 28 px ViTs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in (extractors or DEFAULT_EXTRACTORS[:2]) if not weights_missing(m)]
    data = load_data(data)
    test = data["test"]
    idx = sample_indices(len(test), n, seed)
    images = test.images[idx]
    fg = foreground(images, threshold)
    maps = {m: cls_attention(m, images)[1] for m in names}
    n_patches = next(iter(maps.values())).shape[1] if maps else 16
    patch = grid_patch(images.shape[1], n_patches)  # the 28 px Fashion-MNIST ViTs: 4 x 4 patches of 7 px
    side = images.shape[1] // patch
    fg_frac = patch_fractions(fg, patch)
    cols = 2 + len(names)
    fig, axes = plt.subplots(len(idx), cols, figsize=(1.7 * cols, 1.8 * len(idx)), squeeze=False)
    for r in range(len(idx)):
        axes[r, 0].imshow(images[r], cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_title(f"test #{idx[r]}", fontsize=7)
        for c, m in enumerate(names, start=1):
            a = maps[m][r].reshape(side, side)
            up = np.kron(a, np.ones((patch, patch)))
            axes[r, c].imshow(images[r], cmap="gray", vmin=0, vmax=255)
            axes[r, c].imshow(up, cmap="jet", alpha=0.55, interpolation="nearest")
            f = float(fraction_on_object(maps[m][r:r + 1], fg_frac[r:r + 1])[0])
            short = m.replace("_vit_femto_p7_fmnist", "")
            axes[r, c].set_title(f"{short}: {f:.2f} on obj", fontsize=7)
        garment = np.kron((fg_frac[r] >= GARMENT_PATCH_FG).reshape(side, side), np.ones((patch, patch)))
        shown = np.stack([fg[r] * 255.0] * 3, -1) * 0.7
        shown[garment > 0] += np.array([0.0, 60.0, 120.0])
        axes[r, -1].imshow(shown.clip(0, 255).astype(np.uint8))
        axes[r, -1].set_title("fg (grey), garment patches (blue)", fontsize=6)
    for ax in axes.ravel():
        ax.axis("off")
    return save_figure(fig, path)
