"""Each region's share of the embedding (extractors.contributions): exact decompositions, checked in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.parity import real_images
from extractors.contributions import has_contributions, load_served_graph, served_outputs
from extractors.registry import get_spec, load_extractor
from extractors.tensor_names import ATTENTION_OUTPUT, EMBEDDING_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT
from tests.fixtures.models import CNN_MODEL, VIT_MODEL


def _served(name: str, n: int = 6):
    graph = load_served_graph(name).double()
    pixels = torch.from_numpy(real_images(get_spec(name).input_size, n))
    with torch.no_grad():
        return graph, pixels, graph(pixels)


def test_served_outputs_put_the_embedding_first_and_skip_a_bare_cls_vit():
    assert served_outputs(VIT_MODEL) == [EMBEDDING_OUTPUT, ATTENTION_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT]
    assert served_outputs(CNN_MODEL) == [EMBEDDING_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT]
    assert not has_contributions("dino_vits16")  # its embedding is the CLS token alone: nothing spatial to split


def test_the_served_graph_keeps_the_plain_embedding():
    for name in (VIT_MODEL, CNN_MODEL):
        pixels = torch.from_numpy(real_images(get_spec(name).input_size, 3))
        with torch.no_grad():
            served = load_served_graph(name)(pixels)[0]
            plain = load_extractor(name)(pixels)
        assert torch.allclose(served, plain, atol=1e-6)


def test_vit_gem_shares_plus_the_cls_rest_rebuild_the_descriptor_exactly():
    graph, pixels, (embedding, _, parts) = _served(VIT_MODEL)
    descriptor = graph.backbone
    tokens, _ = graph.tokens_and_attention(pixels)
    raw = descriptor.from_tokens(tokens)
    # The non-spatial rest, written out: the CLS half of the concatenation, minus the whitening mean.
    cls = F.normalize(tokens[:, 0], dim=-1)
    pooled = F.normalize(tokens[:, 1:].clamp(min=1e-6).pow(descriptor.p).mean(1).pow(1 / descriptor.p), dim=-1)
    concat_norm = torch.cat([cls, pooled], 1).norm(dim=-1, keepdim=True)
    rest = (torch.cat([cls / concat_norm, torch.zeros_like(cls)], 1) - descriptor.white_mean.double()) \
        @ descriptor.white_projection.double()
    rebuilt = descriptor.patch_shares(tokens).sum(1) + rest
    assert (rebuilt - raw).abs().max() < 1e-9 * raw.abs().max()
    # The graph's output is per unit embedding: with any unit vector, the shares plus the rest give the cosine.
    assert parts.shape == (len(pixels), 16, get_spec(VIT_MODEL).dim)
    others = embedding.roll(1, 0)
    score = (embedding * others).sum(1)
    rest_share = (rest / raw.norm(dim=-1, keepdim=True) * others).sum(1)
    assert torch.allclose(torch.einsum("brd,bd->b", parts, others) + rest_share, score, atol=1e-9)


def test_cnn_cells_sum_to_the_embedding():
    _, _, (embedding, parts) = _served(CNN_MODEL, 3)
    assert parts.shape == (3, 49, get_spec(CNN_MODEL).dim)
    assert torch.allclose(parts.sum(1), embedding, atol=1e-12)


@pytest.mark.parametrize("model", [VIT_MODEL, CNN_MODEL])
def test_onnx_contributions_match_torch(exported_repository, model):
    _, results = exported_repository
    assert results[model].contributions_parity is not None
    assert results[model].contributions_parity < 1e-5
    assert np.isfinite(results[model].contributions_parity)
