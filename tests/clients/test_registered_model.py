"""A model trained on a user's folder is registered from its run folder, exported, served by real Triton and
searched through the real gateway: no code written, a name is enough."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clients.cli import app
from clients.indexing import index_images
from clients.sdk import SearchClient
from export.repository import export_model
from extractors.datasets import load_fashion_mnist
from extractors.model_cards import MODEL_CARD, ModelCard
from extractors.presets import DINO_PRESETS
from extractors.registry import REGISTRY, get_spec
from extractors.train_dino import train_dino
from launchers.exporting import triton_model_config
from launchers.gateway import GatewayProcess
from server.settings import Settings
from tests.fixtures.milvus import unique_model
from tests.fixtures.triton import start_triton


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, Path, Path]:
    """A smoke DINO run on a folder of real images (3 class folders), registered under a fresh name."""
    root = tmp_path_factory.mktemp("user")
    images = root / "images"
    ds = load_fashion_mnist("test")
    for label in (0, 5, 8):
        (images / f"class{label}").mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(ds.labels == label)[:30]):
            Image.fromarray(ds.images[i]).resize((48, 48)).save(images / f"class{label}" / f"{k:02d}.png")
    train_dino(DINO_PRESETS["smoke-folder"].model_copy(update={"images": str(images), "epochs": 1}), root / "run")
    name = unique_model("user_dino")
    result = CliRunner().invoke(app, ["register", str(root / "run"), "--name", name, "--domain", "garments",
                                      "--to", str(root / "models")])
    assert result.exit_code == 0, result.output
    yield name, root / "models", images
    REGISTRY.pop(name, None)


def test_the_card_says_what_the_network_is_and_was_trained_on(registered):
    name, models, images = registered
    card = ModelCard(**json.loads((models / name / MODEL_CARD).read_text()))
    assert (card.arch, card.patch_size, card.input_size, card.method) == ("femto", 8, 32, "dino")
    assert card.trained_on.startswith(f"folder {images}") and not card.labels_used
    spec = get_spec(name)
    assert spec.input_size == 32 and spec.trained_on == card.trained_on and spec.family == "vit"


def test_a_name_already_taken_is_refused(registered, tmp_path):
    result = CliRunner().invoke(app, ["register", "--weights", str(tmp_path / "x.pth"), "--arch", "small",
                                      "--name", "dino_vit_femto_p7_fmnist", "--to", str(tmp_path)])
    assert result.exit_code == 2 and "already a registered model" in result.output


def test_a_registered_model_is_exported_served_and_searched(registered, milvus_server, tmp_path):
    name, _, images = registered
    repo = tmp_path / "repository"
    export = export_model(name, repo, "cpu", triton_model_config(Settings()))
    assert min(p.min_cosine for p in export.parity) > 0.9999
    with start_triton(repo) as triton, GatewayProcess([triton.grpc_url], milvus_server.uri,
                                                      env={"VSEARCH_MODEL_REPOSITORY": str(repo)}) as gateway:
        client = SearchClient(gateway.address)
        assert [m.name for m in client.list_models()] == [name]
        summary = index_images(client, images, None, name)
        assert summary["indexed"] == 90, summary
        query = images / "class5" / "07.png"
        hits = client.search(name, image=query.read_bytes(), top_k=5).hits
        assert hits[0].id == "class5/07.png" and hits[0].score > 0.999
        client.close()
