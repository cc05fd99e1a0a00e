"""Batched image augmentations written as torch tensor ops.

The DINO recipe (random resized crop, flip, colour jitter, grayscale, blur, solarisation) applied to a
whole batch at once: one ``grid_sample`` does crop + flip + resize for every image. On 2 CPU cores this
is far faster than a per-image PIL pipeline in DataLoader workers, which would steal the cores that
train the model. Inputs are float images in [0, 1], [B, C, H, W].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], ratio=(3 / 4, 4 / 3),
                        flip_p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop (area fraction in ``scale``, aspect in ``ratio``), horizontal flip, resize."""
    B = x.shape[0]
    g = dict(generator=generator, device=x.device)
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(B, **g)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(B, **g)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # crop width/height as a fraction of the side
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(B, **g) - 1)  # centre in normalised [-1, 1] coordinates
    cy = (1 - h) * (2 * torch.rand(B, **g) - 1)
    flip = torch.where(torch.rand(B, **g) < flip_p, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [B, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _apply(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), new, old)


def color_jitter(x: torch.Tensor, p: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    B = x.shape[0]
    g = dict(generator=generator, device=x.device)

    def factor(strength: float) -> torch.Tensor:
        return (1 - strength + 2 * strength * torch.rand(B, 1, 1, 1, **g))

    y = x * factor(brightness)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * factor(contrast) + mean
    if x.shape[1] == 3:
        gray = y.mean(dim=1, keepdim=True)
        y = (y - gray) * factor(saturation) + gray
    return _apply(torch.rand(B, **g) < p, y.clamp(0, 1), x)


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    return _apply(torch.rand(x.shape[0], generator=generator, device=x.device) < p, gray, x)


def gaussian_blur(x: torch.Tensor, p: float, sigma: tuple[float, float] = (0.1, 2.0), kernel_size: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (one grouped convolution per axis)."""
    if p <= 0:
        return x
    B, C, H, W = x.shape
    g = dict(generator=generator, device=x.device)
    # Sigma is given for a 224-px image (DINO's values); scale it to this image size.
    s = (sigma[0] + (sigma[1] - sigma[0]) * torch.rand(B, **g)) * (H / 224)
    k = kernel_size or max(3, 2 * int(math.ceil(3 * sigma[1] * H / 224)) + 1)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-(t[None] ** 2) / (2 * s[:, None] ** 2 + 1e-8))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # [B*C, k]
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kernel[:, None, :, None], groups=B * C)
    return _apply(torch.rand(B, **g) < p, y.reshape(B, C, H, W), x)


def solarize(x: torch.Tensor, p: float, threshold: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    if p <= 0:
        return x
    y = torch.where(x >= threshold, 1 - x, x)
    return _apply(torch.rand(x.shape[0], generator=generator, device=x.device) < p, y, x)


class DataAugmentationDINO:
    """Multi-crop: 2 global crops (blur 1.0 / 0.1, solarise 0 / 0.2) and ``local_crops_number`` small crops."""

    def __init__(self, global_crops_scale: tuple[float, float], local_crops_scale: tuple[float, float],
                 local_crops_number: int, global_crop_size: int, local_crop_size: int) -> None:
        self.global_crops_scale = global_crops_scale
        self.local_crops_scale = local_crops_scale
        self.local_crops_number = local_crops_number
        self.global_crop_size = global_crop_size
        self.local_crop_size = local_crop_size

    def _view(self, x, size, scale, blur_p, solarize_p, generator):
        v = random_resized_crop(x, size, scale, generator=generator)
        v = random_grayscale(color_jitter(v, generator=generator), generator=generator)
        v = gaussian_blur(v, blur_p, generator=generator)
        return solarize(v, solarize_p, generator=generator)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        crops = [
            self._view(x, self.global_crop_size, self.global_crops_scale, 1.0, 0.0, generator),
            self._view(x, self.global_crop_size, self.global_crops_scale, 0.1, 0.2, generator),
        ]
        crops += [self._view(x, self.local_crop_size, self.local_crops_scale, 0.5, 0.0, generator)
                  for _ in range(self.local_crops_number)]
        return crops


def supervised_augment(x: torch.Tensor, size: int, scale: tuple[float, float],
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The supervised baseline's augmentation: DINO's global-crop view without blur and solarisation."""
    v = random_resized_crop(x, size, scale, generator=generator)
    return random_grayscale(color_jitter(v, generator=generator), generator=generator)
