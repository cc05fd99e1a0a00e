"""The Node.js client (clients/node/search.js) against the real gateway: it loads the same .proto at run time,
so this checks the contract from a second language end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from extractors.datasets import load_fashion_mnist

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "clients" / "node"
SCRIPT = NODE_DIR / "search.js"
N_INDEXED = 50
QUERY_INDEX = 7  # one of the indexed test images


def run_client(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH (Node.js >= 18 is needed for clients/node).", pytrace=False)
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").exists():
        pytest.fail(
            "clients/node/node_modules is missing: run `make install` (or `npm ci --prefix clients/node`).",
            pytrace=False,
        )
    return subprocess.run([node, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def parse_stdout(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, f"node client exited {result.returncode}:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def fmnist_test():
    return load_fashion_mnist("test")


@pytest.fixture(scope="module")
def indexed_ids(gateway) -> list[str]:
    ids = gateway.index_fashion_mnist(N_INDEXED)
    assert len(ids) == N_INDEXED
    return ids


@pytest.fixture(scope="module")
def query_png(fmnist_test, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("node_client") / f"{fmnist_test.ids[QUERY_INDEX]}.png"
    fmnist_test.pil(QUERY_INDEX).save(path, format="PNG")
    return path


def _assert_label(hit: dict, label: int, classes: list[str]) -> None:
    value = hit["metadata"]["label"]  # a visualsearch.v1.Value; `kind` names the member set (oneofs: true)
    assert str(value[value["kind"]]) in {str(label), classes[label]}, value


def test_search_by_image_finds_itself(gateway, indexed_ids, fmnist_test, query_png) -> None:
    expected_id = fmnist_test.ids[QUERY_INDEX]
    assert expected_id in indexed_ids
    model = gateway.models[0]

    response = parse_stdout(
        run_client("--address", gateway.address, "--model", model, "--image", str(query_png), "--top-k", "3")
    )

    assert response["model"] == model
    hits = response["hits"]
    assert len(hits) == 3
    # Other tests index Fashion-MNIST train images too; an exact duplicate of the query ties at score 1.0.
    assert expected_id in [h["id"] for h in hits[:3]], hits
    assert hits[0]["score"] > 0.99, hits[0]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    _assert_label(next(h for h in hits if h["id"] == expected_id), int(fmnist_test.labels[QUERY_INDEX]),
                  fmnist_test.classes)
    # keepCase: false in search.js, so fields print under their proto3 JSON (lowerCamelCase) names.
    timings = response["timings"]
    assert set(timings) >= {"decodeMs", "embedMs", "searchMs", "totalMs"}, timings
    assert all(timings[k] >= 0 for k in ("decodeMs", "embedMs", "searchMs"))
    assert timings["totalMs"] > 0


def test_search_by_id(gateway, indexed_ids) -> None:
    query_id = indexed_ids[0]
    response = parse_stdout(
        run_client("--address", gateway.address, "--model", gateway.models[0], "--id", query_id, "--top-k", "2")
    )
    assert response["hits"][0]["id"] == query_id
    assert response["hits"][0]["score"] > 0.99


def test_list_models(gateway) -> None:
    response = parse_stdout(run_client("--address", gateway.address, "--list-models"))
    assert set(gateway.models) <= {m["name"] for m in response["models"]}


def test_unknown_model_is_invalid_argument(gateway, query_png) -> None:
    result = run_client("--address", gateway.address, "--model", "no-such-model", "--image", str(query_png))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error["name"] == "INVALID_ARGUMENT", error
    assert error["code"] == 3
    assert isinstance(error["details"], str)


def test_embed_search_options_and_find_duplicates(gateway, indexed_ids, query_png) -> None:
    model = gateway.models[0]
    address = ("--address", gateway.address, "--model", model)
    embedded = parse_stdout(run_client(*address, "--image", str(query_png), "--image", str(query_png), "--embed"))
    assert len(embedded["vectors"]) == 2 and len(embedded["vectors"][0]["values"]) > 0

    top3 = parse_stdout(run_client(*address, "--image", str(query_png), "--top-k", "3"))["hits"]
    paged = parse_stdout(run_client(*address, "--image", str(query_png), "--top-k", "2", "--offset", "1"))["hits"]
    assert [h["id"] for h in paged] == [h["id"] for h in top3[1:3]]
    bound = top3[1]["score"]
    ranged = parse_stdout(run_client(*address, "--image", str(query_png), "--top-k", "50", "--min-score",
                                     str(bound)))["hits"]
    assert ranged and all(h["score"] >= bound - 1e-6 for h in ranged)
    assert top3[0]["id"] in {h["id"] for h in ranged}

    models = parse_stdout(run_client("--address", gateway.address, "--list-models"))["models"]
    assert next(m for m in models if m["name"] == model)["calibration"] is not None, "the calibration is committed"
    near = parse_stdout(run_client(*address, "--image", str(query_png), "--min-verdict", "near_duplicate"))
    assert near["hits"] and near["hits"][0]["verdict"] == "VERDICT_EXACT"
    assert all(h["verdict"] in ("VERDICT_NEAR_DUPLICATE", "VERDICT_EXACT") for h in near["hits"])

    stream = parse_stdout(run_client(*address, "--find-duplicates", "--min-score", "0.9999", timeout=120))
    kinds = [m["message"] for m in stream["messages"]]
    assert kinds[0] == "progress" and kinds[-1] == "summary"
    assert int(stream["messages"][-1]["summary"]["items"]) >= len(indexed_ids)
