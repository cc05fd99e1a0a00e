"""The raw-pixel floor is an extractor of the registry like the others, with one formula."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from extractors.embedding import EmbeddingModel
from extractors.registry import PIXELS, get_spec, load_extractor


def test_pixels_is_a_registry_extractor_with_one_formula():
    spec = get_spec(PIXELS)
    assert (spec.input_size, spec.dim, spec.family, spec.labels_used) == (28, 784, "pixels", False)
    assert spec.weights() is None and not spec.has_attention
    assert (spec.photo_size, get_spec("dino_vit_femto_p7_fmnist").photo_size) == (32, None)
    model = load_extractor(PIXELS)
    assert isinstance(model, EmbeddingModel)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 28, 28), dtype=np.uint8))
    out = model(x)
    assert out.shape == (5, 784)
    assert torch.equal(out, F.normalize(x.float().mean(1).flatten(1), dim=1))
    grey = x[:, :1].expand(-1, 3, -1, -1)  # grey images: the channel mean is the first channel
    assert torch.equal(model(grey), F.normalize(grey[:, 0].flatten(1).float(), dim=1))
    assert model(torch.from_numpy(np.zeros((1, 3, 32, 32), np.uint8))).shape == (1, 1024)  # any input size
