"""The committed figures were measured with the models served now: each result records the served models' weights
hashes, and a retrained model makes its figures stale here (and in BENCHMARKS.md) until they are measured again."""

from __future__ import annotations

import json

import pytest

from benchmarks import common
from benchmarks.report import DEFAULT_RESULTS, ORDER

# Measured before hashes were recorded, or with earlier weights: named here until `make bench` measures them again
# (an entry that is no longer stale fails below, so the list only shrinks).
KNOWN_STALE = {"embedding", "dynamic_batching", "vector_search", "ingest", "explain", "dedup", "open_loop"}


def committed() -> dict[str, dict]:
    return {name: json.loads((DEFAULT_RESULTS / f"{name}.json").read_text()) for name in ORDER
            if (DEFAULT_RESULTS / f"{name}.json").exists()}


@pytest.mark.parametrize("name", ORDER)
def test_committed_figures_are_of_the_served_models(name):
    result = committed().get(name)
    if result is None:
        pytest.skip(f"{name} has no committed results")
    stale = common.stale_models(result)
    if name in KNOWN_STALE:
        assert stale, f"{name} is measured with the served models now: remove it from KNOWN_STALE"
    else:
        assert not stale, (f"{name}'s figures are of other weights ({stale}): "
                           f"run `python -m benchmarks.run --only {name}`")


def test_a_retrained_model_makes_its_figures_stale(monkeypatch):
    result = {"served_models": common.served_models()}
    assert common.stale_models(result) == {}
    model = next(iter(result["served_models"]))
    monkeypatch.setattr(common, "served_models", lambda: {**result["served_models"], model: "0123456789ab"})
    assert common.stale_models(result) == {model: (result["served_models"][model], "0123456789ab")}
    assert set(common.stale_models({})) == set(result["served_models"])  # nothing recorded: all stale
