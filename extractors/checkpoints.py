"""Loading ViT weights from the files people actually have.

Accepted: a plain backbone state dict (``dino_deitsmall16_pretrain.pth``, timm's ``vit_small_patch16_224``
``.pth``/``.bin``/``.safetensors``, our ``teacher_backbone.pth``), or a full DINO training checkpoint
(``{"teacher": ...}`` with ``module.``/``backbone.`` prefixes and a ``head.`` that is the DINO head, not a
classifier). Loading is always ``strict=True``: a silently half-loaded backbone is worse than an error."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def read_state_dict(path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # optional: only needed for timm's safetensors files

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=False)
    for k in ([key] if key else []) + ["teacher", "state_dict", "model"]:
        if isinstance(state, dict) and k in state and isinstance(state[k], dict):
            state = state[k]
            break
    return dict(state)


def clean_backbone_keys(state: dict[str, torch.Tensor], keep_head: bool) -> dict[str, torch.Tensor]:
    """Strips DDP/multi-crop prefixes; drops the DINO projection head (``head.mlp``, ``head.last_layer``)."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.").removeprefix("backbone.")
        if k.startswith("head.") and (not keep_head or k.startswith(("head.mlp", "head.last_layer"))):
            continue
        out[k] = v
    return out


def resample_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's position embeddings resampled (bicubic, as DINO's ``interpolate_pos_encoding``) to the
    model's patch grid: an official ViT-S/16 trained at 224 px starts a 96 px model with its 6 x 6 grid."""
    theirs, ours = state.get("pos_embed"), getattr(model, "pos_embed", None)
    if theirs is None or ours is None or theirs.shape == ours.shape or theirs.shape[-1] != ours.shape[-1]:
        return state
    side_in, side_out = math.isqrt(theirs.shape[1] - 1), math.isqrt(ours.shape[1] - 1)
    grid = theirs[:, 1:].reshape(1, side_in, side_in, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(side_out, side_out), mode="bicubic", align_corners=False)
    return {**state, "pos_embed": torch.cat([theirs[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)}


def load_backbone(model: nn.Module, path: Path, keep_head: bool | None = None,
                  resample_pos_embed_to_model: bool = False) -> nn.Module:
    """Loads ``path`` into ``model`` strictly. ``keep_head`` defaults to whether the model has a classifier.
    ``resample_pos_embed_to_model``: a checkpoint made at another input size is accepted (continued training)."""
    if keep_head is None:
        keep_head = isinstance(getattr(model, "head", None), nn.Linear)
    state = clean_backbone_keys(read_state_dict(path), keep_head)
    if resample_pos_embed_to_model:
        state = resample_pos_embed(state, model)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise ValueError(f"{path} does not match the model (wrong size or patch size?): {e}") from None
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model: missing {sorted(missing)[:8]}, "
                         f"unexpected {sorted(unexpected)[:8]} (wrong size, patch size or a non-ViT file?)")
    return model
