"""benchmarks/report.py: BENCHMARKS.md from results files, with fake benchmark modules (no servers)."""

from __future__ import annotations

import json
import sys
import types

import pytest

import benchmarks.common
from benchmarks import report
from benchmarks.common import Target


def fake_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(f"benchmarks.{name}")
    mod.targets = lambda r: [Target(t["name"], t["target"], f"{t['value']} ms", t["met"]) for t in r["targets"]]
    mod.markdown = lambda r: f"## Fake {name}\n\n{r['value']} things/s measured.\n"
    return mod


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("VSEARCH_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(benchmarks.common, "RESULTS", tmp_path)
    modules = {"alpha": fake_module("alpha"), "missing": fake_module("missing"), "beta": fake_module("beta")}

    def load(name):
        if name == "broken":
            raise ImportError("No module named 'some_dependency'")
        return modules[name]

    monkeypatch.setattr(report, "ORDER", ["alpha", "missing", "broken", "beta"])
    monkeypatch.setattr(report, "load_module", load)
    machine = {"cpus": 2, "platform": "Linux-test", "python": "3.11", "loadavg_1m_at_start": 1.25}
    (tmp_path / "alpha.json").write_text(json.dumps({"machine": machine, "value": 123, "targets": [
        {"name": "alpha latency", "target": "<= 10 ms", "value": 7, "met": True},
        {"name": "alpha p99", "target": "<= 20 ms", "value": 31, "met": False}]}))
    (tmp_path / "beta.json").write_text(json.dumps({"machine": machine, "value": 456, "targets": []}))
    (tmp_path / "broken.json").write_text(json.dumps({"machine": machine, "value": 1, "targets": []}))
    return tmp_path


def test_targets_table_marks_met_and_missed(results):
    text = report.build()
    assert "| alpha latency | <= 10 ms | 7 ms | ✅ |" in text
    assert "| alpha p99 | <= 20 ms | 31 ms | ❌ |" in text
    assert text.index("## Targets") < text.index("| alpha latency")


def test_sections_in_order_with_missing_and_broken_modules(results):
    text = report.build()
    assert text.index("## Fake alpha") < text.index("(`benchmarks/missing.py`)") < text.index(
        "(`benchmarks/broken.py`)") < text.index("## Fake beta")
    missing = text[text.index("(`benchmarks/missing.py`)"):text.index("(`benchmarks/broken.py`)")]
    assert "not measured yet: run `make bench`" in missing
    broken = text[text.index("(`benchmarks/broken.py`)"):text.index("## Fake beta")]
    assert "could not be imported" in broken and "some_dependency" in broken
    assert "123 things/s" in text and "456 things/s" in text


def test_header_has_how_to_run_and_machine(results):
    text = report.build()
    assert text.startswith("# Benchmarks")
    assert "`make bench`" in text and "`make bench-quick`" in text
    assert "2 CPU cores" in text and "alpha 1.25" in text


def test_a_failing_markdown_does_not_break_the_report(results, monkeypatch):
    bad = fake_module("beta")
    bad.markdown = lambda r: r["no such key"]
    load = report.load_module
    monkeypatch.setattr(report, "load_module", lambda name: bad if name == "beta" else load(name))
    text = report.build()
    assert "## Fake alpha" in text and "could not be rendered" in text


def test_redirected_results_never_write_the_committed_report(results):
    path = report.write()
    assert path == results / "BENCHMARKS.md"
    assert "| alpha latency |" in path.read_text()


def test_no_results_at_all(results):
    for p in results.glob("*.json"):
        p.unlink()
    text = report.build()
    assert "No target measured yet" in text
    assert text.count("not measured yet: run `make bench`") == 3  # alpha, missing, beta; broken says why


def test_run_survives_a_failing_benchmark_then_writes_the_report(results, monkeypatch, capsys):
    from benchmarks import run

    ran = []
    for name in ("alpha", "beta"):
        mod = fake_module(name)

        def bench(quick=False, name=name):
            ran.append((name, quick))
            if name == "alpha":
                raise RuntimeError("alpha exploded")
            return {}

        mod.run = bench
        monkeypatch.setitem(sys.modules, f"benchmarks.{name}", mod)
    monkeypatch.setattr(run, "ORDER", ["alpha", "beta"])
    assert run.main(["--quick"]) == 1
    assert ran == [("alpha", True), ("beta", True)]
    assert "alpha exploded" in capsys.readouterr().err
    assert (results / "BENCHMARKS.md").exists()  # redirected results: the report goes next to them


def test_quick_runs_never_use_the_committed_results(monkeypatch):
    from benchmarks import run

    monkeypatch.delenv("VSEARCH_BENCH_RESULTS", raising=False)
    assert run.results_dir(quick=False) == run.COMMITTED_RESULTS
    assert run.results_dir(quick=True) == run.QUICK_RESULTS
    monkeypatch.setenv("VSEARCH_BENCH_RESULTS", str(run.COMMITTED_RESULTS))
    assert run.results_dir(quick=True) == run.QUICK_RESULTS
