"""The ``vsearch`` commands a new user types first, against the real stack."""

from __future__ import annotations

from typer.testing import CliRunner

from clients.cli import app
from extractors.datasets import load_fashion_mnist
from launchers.ports import free_port
from tests.fixtures.models import VIT_MODEL

runner = CliRunner()


def test_index_is_resumable_and_models_counts_it(gateway):
    args = ["index", "--dataset", "fashion-mnist", "--limit", "120", "--model", VIT_MODEL,
            "--address", gateway.address]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "'skipped_existing': 120" in second.output and "'indexed': 0" in second.output
    models = runner.invoke(app, ["models", "--address", gateway.address])
    assert models.exit_code == 0 and VIT_MODEL in models.output


def test_resuming_over_another_models_vectors_indexes_again(gateway):
    """A checkpoint promoted under the same model name: the stored vectors are other weights'. Storing vectors
    by hand for the same ids is that situation through the public API (Upsert with vectors)."""
    import numpy as np

    from clients.sdk import Item, SearchClient

    args = ["index", "--dataset", "fashion-mnist", "--limit", "40", "--model", VIT_MODEL, "--address", gateway.address]
    assert runner.invoke(app, args).exit_code == 0
    with SearchClient(gateway.address) as client:
        dim = next(m.dim for m in client.list_models() if m.name == VIT_MODEL)
        ids = [i.id for i in client.get(VIT_MODEL, [f"fmnist-train-{k:05d}" for k in range(40)])]
        assert len(ids) == 40
        other = np.random.default_rng(0).standard_normal((40, dim)).astype(np.float32)
        other /= np.linalg.norm(other, axis=1, keepdims=True)
        assert client.upsert([Item(i, vector=v) for i, v in zip(ids, other, strict=True)], VIT_MODEL).upserted == 40
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "other weights" in again.output
    assert "'stale_vectors_replaced': 40" in again.output and "'indexed': 40" in again.output
    assert "'skipped_existing': 0" in again.output
    resumed = runner.invoke(app, args)  # now the stored vectors are the served model's: skipped again
    assert "'skipped_existing': 40" in resumed.output and "'stale_vectors_replaced': 0" in resumed.output


def test_search_prints_hits_and_writes_a_grid(gateway, tmp_path):
    gateway.index_fashion_mnist(30)
    query = tmp_path / "query.png"
    load_fashion_mnist("test").pil(3).save(query)
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["search", str(query), "--model", VIT_MODEL, "--top-k", "5", "--out", str(out),
                                 "--address", gateway.address])
    assert result.exit_code == 0, result.output
    assert "fmnist-test-00003" in result.output and out.stat().st_size > 1000


def test_stats_reads_health_counts_and_metrics(gateway):
    result = runner.invoke(app, ["stats", "--address", gateway.address, "--metrics-url",
                                 f"http://127.0.0.1:{gateway.process.metrics_port}/metrics"])
    assert result.exit_code == 0, result.output
    assert "SERVING" in result.output and "Search" in result.output


def test_stats_finds_the_metrics_where_the_gateway_serves_them(gateway):
    """No --metrics-url: the gateway's host at VSEARCH_METRICS_PORT, the port `vsearch up` gives the gateway."""
    result = runner.invoke(app, ["stats", "--address", gateway.address],
                           env={"VSEARCH_METRICS_PORT": str(gateway.process.metrics_port)})
    assert result.exit_code == 0, result.output
    assert "not reachable" not in result.output and "requests by method" in result.output


def test_errors_a_person_understands(gateway, tmp_path):
    down = runner.invoke(app, ["models", "--address", f"127.0.0.1:{free_port()}"])
    assert down.exit_code == 3 and "vsearch up" in down.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    invalid = runner.invoke(app, ["search", str(bad), "--model", VIT_MODEL, "--address", gateway.address])
    assert invalid.exit_code == 2 and "INVALID_ARGUMENT" in invalid.output


def test_dedup_embed_and_search_options(gateway, tmp_path):
    import json

    import numpy as np

    ids = gateway.index_fashion_mnist(30)
    query = tmp_path / "query.png"
    load_fashion_mnist("test").pil(3).save(query)
    vectors = tmp_path / "v.npy"
    embedded = runner.invoke(app, ["embed", str(query), str(query), "--model", VIT_MODEL, "--out", str(vectors),
                                   "--address", gateway.address])
    assert embedded.exit_code == 0, embedded.output
    v = np.load(vectors)
    assert v.shape[0] == 2 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    paged = runner.invoke(app, ["search", str(query), "--model", VIT_MODEL, "--top-k", "3", "--offset", "1",
                                "--min-score", "-1", "--out", str(tmp_path / "g.png"), "--address", gateway.address])
    assert paged.exit_code == 0, paged.output
    assert "fmnist-test-00003" not in paged.output  # the query's own image is hit 0, skipped by --offset 1
    out = tmp_path / "dedup"
    # a bound of -1 pairs every item with its neighbours: the collection's items come back grouped
    dedup = runner.invoke(app, ["dedup", "--model", VIT_MODEL, "--min-score", "-1", "--neighbours", "2", "--out",
                                str(out), "--address", gateway.address])
    assert dedup.exit_code == 0, dedup.output
    listing = json.loads((out / "duplicates.json").read_text())
    assert listing["summary"]["items"] >= len(ids) and listing["groups"]
    assert set(ids) <= {i for g in listing["groups"] for i in g["ids"]}
    page = (out / "duplicates.html").read_text()
    assert "data:image/jpeg;base64" in page and "group 1" in page
    bad = runner.invoke(app, ["search", str(query), "--model", VIT_MODEL, "--min-score", "2",
                              "--address", gateway.address])
    assert bad.exit_code == 2 and "INVALID_ARGUMENT" in bad.output and "min_score" in bad.output


def test_web_serves_the_page_for_a_gateway_elsewhere(gateway):
    """`vsearch web` (what docker-compose.yml's web service runs) as its own process: the page's API lists the
    gateway's models, and a Ctrl+C stops it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "web", "--address", gateway.address, "--port",
                             str(port)], env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, models = time.monotonic() + 60, None
        while models is None:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models", timeout=5) as reply:
                    models = json.load(reply)
            except OSError:
                assert time.monotonic() < deadline, "the page did not answer in 60 s"
                time.sleep(0.3)
        assert VIT_MODEL in {m["name"] for m in models}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in output, output
