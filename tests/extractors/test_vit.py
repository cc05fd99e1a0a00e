"""The ViT loads official checkpoints strictly and behaves like the reference implementation."""

from __future__ import annotations

import pytest
import torch

from extractors.checkpoints import load_backbone
from extractors.registry import get_spec, load_extractor
from extractors.vit import vit_base, vit_small


def official_state_dict(dim: int, depth: int, patch: int, img: int = 224, num_classes: int = 0):
    """A state dict with exactly the names and shapes of facebookresearch/dino's (and timm's) ViTs."""
    g = torch.Generator().manual_seed(1)
    n = (img // patch) ** 2 + 1
    sd = {"cls_token": (1, 1, dim), "pos_embed": (1, n, dim), "patch_embed.proj.weight": (dim, 3, patch, patch),
          "patch_embed.proj.bias": (dim,), "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
               b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
               b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
               b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
               b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
               b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)}
    if num_classes:
        sd |= {"head.weight": (num_classes, dim), "head.bias": (num_classes,)}
    return {k: torch.randn(shape, generator=g) * 0.02 for k, shape in sd.items()}


def test_official_dino_vits16_keys_load_strictly():
    sd = official_state_dict(384, 12, 16)
    model = vit_small(patch_size=16)
    model.load_state_dict(sd, strict=True)
    assert set(model.state_dict()) == set(sd)


def test_official_dino_vitb8_and_timm_vit_base_with_head_load_strictly():
    vit_base(patch_size=8).load_state_dict(official_state_dict(768, 12, 8), strict=True)
    vit_base(patch_size=16, num_classes=1000).load_state_dict(official_state_dict(768, 12, 16, num_classes=1000),
                                                              strict=True)


def test_registry_loads_a_user_checkpoint_file_and_a_full_dino_checkpoint(tmp_path, monkeypatch):
    sd = official_state_dict(384, 12, 16)
    plain = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(sd, plain)
    monkeypatch.setenv("VSEARCH_WEIGHTS_DIR", str(tmp_path))
    model = load_extractor("dino_vits16")
    assert torch.equal(model.backbone.vit.pos_embed, sd["pos_embed"])
    emb = model(torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8))
    assert emb.shape == (2, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)

    # A full training checkpoint: teacher weights behind DDP and multi-crop prefixes, plus the DINO head.
    full = {"teacher": {f"module.backbone.{k}": v for k, v in sd.items()}
            | {"module.head.mlp.0.weight": torch.zeros(4, 384), "module.head.last_layer.weight_g": torch.ones(8, 1)},
            "epoch": 100}
    torch.save(full, tmp_path / "full.pth")
    loaded = load_backbone(vit_small(16), tmp_path / "full.pth")
    assert torch.equal(loaded.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    torch.save(official_state_dict(384, 12, 16), tmp_path / "s16.pth")
    with pytest.raises(ValueError, match="does not match the model"):
        load_backbone(vit_base(16), tmp_path / "s16.pth")


def test_position_embedding_interpolation_and_attention_maps():
    model = vit_small(patch_size=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 384)
        assert model(torch.randn(2, 3, 160, 96)).shape == (2, 384)  # 10x6 patches, interpolated
        attn = model.get_last_selfattention(torch.randn(2, 3, 224, 224))
    assert attn.shape == (2, 6, 197, 197)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 6, 197), atol=1e-5)


def test_fused_attention_equals_the_explicit_softmax():
    model = vit_small(patch_size=16).eval()
    blk = model.blocks[0].attn
    x = torch.randn(2, 50, 384)
    with torch.no_grad():
        fused, _ = blk(x)
        q, k, v = blk._qkv(x)
        explicit = ((q * blk.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
        explicit = blk.proj(explicit.transpose(1, 2).reshape(2, 50, 384))
    assert torch.allclose(fused, explicit, atol=1e-5)


def test_random_fmnist_extractor_takes_uint8_and_returns_unit_vectors():
    model = load_extractor("random_vit_femto_p7_fmnist")
    emb = model(torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8))
    assert emb.shape == (4, get_spec("random_vit_femto_p7_fmnist").dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    again = load_extractor("random_vit_femto_p7_fmnist")  # seeded: the same network every time
    assert torch.equal(model.backbone.vit.pos_embed, again.backbone.vit.pos_embed)
    emb2, attn = load_extractor("random_vit_femto_p7_fmnist", with_attention=True)(
        torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8))
    assert attn.shape == (4, 4, 16)
