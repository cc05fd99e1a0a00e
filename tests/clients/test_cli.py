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


def test_errors_a_person_understands(gateway, tmp_path):
    down = runner.invoke(app, ["models", "--address", f"127.0.0.1:{free_port()}"])
    assert down.exit_code == 3 and "vsearch up" in down.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    invalid = runner.invoke(app, ["search", str(bad), "--model", VIT_MODEL, "--address", gateway.address])
    assert invalid.exit_code == 2 and "INVALID_ARGUMENT" in invalid.output
