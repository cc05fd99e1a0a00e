"""clients/loadtest: a short headless locust run against the real stack, and the ghz config."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from google.protobuf.message_factory import GetMessageClass
from PIL import Image

from clients.loadtest import GHZ_CONFIG, GHZ_IMAGE_INDEX, REPO_ROOT
from extractors.datasets import load_fashion_mnist
from server.settings import Settings
from tests.fixtures.models import VIT_MODEL
from visualsearch.v1 import search_pb2 as pb

LOCUST = Path(sys.executable).with_name("locust")


def _count(gateway, model: str) -> int:
    reply = gateway.stub().ListModels(pb.ListModelsRequest(), timeout=30)
    return next(m.count for m in reply.models if m.name == model)


def test_locust_headless_run(gateway, tmp_path):
    gateway.index_fashion_mnist(50)
    before = _count(gateway, VIT_MODEL)
    env = dict(os.environ, VSEARCH_LOADTEST_MODEL=VIT_MODEL, VSEARCH_LOADTEST_IDS_PREFIX="fmnist-test-",
               VSEARCH_LOADTEST_IDS_COUNT="50")
    cmd = [str(LOCUST), "-f", "clients/loadtest/locustfile.py", "--host", gateway.address, "-u", "4", "-r", "4",
           "-t", "5s", "--stop-timeout", "10", "--headless", "--only-summary", "--csv", str(tmp_path / "run"),
           "--loglevel", "WARNING"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    with (tmp_path / "run_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0, (tmp_path / "run_failures.csv").read_text()
    assert {"Search/image", "Search/id"} <= set(rows), sorted(rows)
    assert all(rows[name]["Type"] == "grpc" for name in rows if name != "Aggregated")
    assert "ListModels" not in rows  # the model came from VSEARCH_LOADTEST_MODEL
    # the ids that exist were found with Get and searched; what the run upserted was deleted at the end
    assert _count(gateway, VIT_MODEL) == before


def test_ghz_config_matches_the_contract():
    config = json.loads(GHZ_CONFIG.read_text())
    proto = REPO_ROOT / config["proto"]
    assert proto.resolve() == (REPO_ROOT / "proto/visualsearch/v1/search.proto").resolve() and proto.is_file()
    assert all((REPO_ROOT / p).is_dir() for p in config.get("import-paths", []))
    package_service, method = config["call"].rsplit(".", 1)
    service = pb.DESCRIPTOR.services_by_name[package_service.rsplit(".", 1)[1]]
    assert service.full_name == package_service and method in service.methods_by_name
    assert config["insecure"] is True and config["concurrency"] > 0 and config["total"] >= config["concurrency"]

    # the data is a valid request of that method (bytes as base64, as in proto3 JSON) for a served model
    request = json_format.ParseDict(config["data"], GetMessageClass(service.methods_by_name[method].input_type)())
    assert isinstance(request, pb.SearchRequest) and request.WhichOneof("query") == "image"
    assert request.model in Settings().models
    # ...whose image is Fashion-MNIST test image GHZ_IMAGE_INDEX, pixel for pixel
    pixels = np.asarray(Image.open(io.BytesIO(request.image)))
    assert np.array_equal(pixels, load_fashion_mnist("test").images[GHZ_IMAGE_INDEX])
    assert base64.b64decode(config["data"]["image"]) == request.image
