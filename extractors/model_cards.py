"""Models registered from a folder, not from code: ``model.json`` (a model card) beside the weights.

A run of ``vsearch train ... --images DIR`` is turned into a servable extractor by ``vsearch register RUN --name
NAME``: the weights are copied to ``weights/NAME/`` (or ``VSEARCH_MODELS_DIR/NAME/``) with a card that says what
the network is (architecture, input size, normalisation, descriptor) and what it was trained on. The registry reads
every card at import, so ``vsearch export``, ``vsearch up``, ``vsearch eval`` and the gateway's model list take the
name like a built-in one. A user's own network (official DINO / timm ViT file, EfficientNet-Lite0 weights) is
registered the same way with ``--weights FILE`` and the card's fields as flags."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from extractors.normalization import training_normalization

MODEL_CARD = "model.json"
EFFICIENTNET = "efficientnet_lite0"


class ModelCard(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{1,62}$")  # a Triton model and Milvus collection name too
    arch: str  # a ViT size (femto, pico, tiny, small, base) or efficientnet_lite0
    patch_size: int = 0  # ViTs only
    input_size: int
    mean: tuple[float, float, float]  # 0..1 scale, as training normalised
    std: tuple[float, float, float]
    descriptor: Literal["cls", "cls_gem_whitened"] = "cls"  # ViTs: what the served embedding is
    weights: str  # file name beside the card
    num_classes: int = 0  # a supervised ViT keeps its head in the state dict
    trained_on: str = ""  # the data, e.g. "folder brain-mri/Training (5,712 images, unlabelled)"
    domain: str = ""  # what the images are, in a few words, for a person choosing a model
    labels_used: bool = False
    method: str = ""  # dino, dino-adapted, supervised, pre-trained

    @property
    def family(self) -> str:
        return "cnn" if self.arch == EFFICIENTNET else "vit"


def models_dirs(committed: Path) -> list[Path]:
    """Where cards are looked for: the committed weights/ and, when set, VSEARCH_MODELS_DIR."""
    extra = os.environ.get("VSEARCH_MODELS_DIR")
    return [committed] + ([Path(extra)] if extra else [])


def find_cards(committed: Path) -> list[tuple[ModelCard, Path]]:
    found = []
    for root in models_dirs(committed):
        for path in sorted(Path(root).glob(f"*/{MODEL_CARD}")):
            found.append((ModelCard(**json.loads(path.read_text())), path.parent))
    return found


def card_from_run(run_dir: Path, name: str, domain: str = "") -> tuple[ModelCard, Path]:
    """The card of a ``vsearch train`` run folder and the weights file it serves (the DINO teacher, or the
    supervised network)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} has no config.json: is it a `vsearch train` run folder?")
    cfg = json.loads(config_path.read_text())
    dino = "out_dim" in cfg
    weights = run_dir / ("teacher_backbone.pth" if dino else "backbone.pth")
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing: the run has not finished an epoch yet")
    backbone = cfg["backbone"]
    mean, std = training_normalization(cfg.get("images", ""), cfg.get("mean"), cfg.get("std"), backbone["arch"])
    images = cfg.get("images") or cfg.get("dataset", "")
    method = ("dino-adapted" if cfg.get("init_backbone") else "dino") if dino else "supervised"
    card = ModelCard(
        name=name, arch=backbone["arch"], patch_size=backbone.get("patch_size", 0), input_size=backbone["img_size"],
        mean=tuple(mean), std=tuple(std), weights=weights.name, num_classes=0 if dino else cfg.get("num_classes", 0),
        trained_on=f"{'folder ' if cfg.get('images') else ''}{images} ({'unlabelled' if dino else 'labelled'})"
        + (f", from {cfg['init_backbone']}" if cfg.get("init_backbone") else ""),
        domain=domain, labels_used=not dino, method=method)
    return card, weights


def write_card(card: ModelCard, weights: Path, root: Path, taken: set[str]) -> Path:
    """Copies the weights beside a new card under ``root/NAME/``; refuses a name in ``taken`` (the registry's
    models, but for a card registered here before: registering a run again updates it)."""
    folder = Path(root) / card.name
    if card.name in taken and not (folder / MODEL_CARD).exists():
        raise ValueError(f"{card.name!r} is already a registered model: choose another --name")
    folder.mkdir(parents=True, exist_ok=True)
    if Path(weights).resolve() != (folder / card.weights).resolve():
        shutil.copyfile(weights, folder / card.weights)
    (folder / MODEL_CARD).write_text(card.model_dump_json(indent=2) + "\n")
    return folder
