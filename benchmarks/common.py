"""Shared benchmark plumbing: results files, targets, machine description.

Every benchmark module (or package) ``benchmarks/<name>`` has the same shape, so ``make bench`` can run them all and
build BENCHMARKS.md from their results:

- ``run(quick: bool = False) -> dict``: measures, prints a rich table, writes ``results/<name>.json`` with
  ``write_result`` and returns the payload. ``quick`` is a bounded smoke run (well under a minute) for the tests.
- ``markdown(result: dict) -> str``: the module's BENCHMARKS.md section (``## ...`` heading, how it was measured,
  tables), every sentence derived from ``result``; built with ``evaluation.document.Doc``.
- ``targets(result: dict) -> list[Target]``: the issue's targets this module measures, with the measured value.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from evaluation.document import Doc

console = Console()  # every benchmark prints through this one (progress bars and log lines interleave)
# Tests point this at a temporary folder so quick runs never overwrite the committed figures.
RESULTS = Path(os.environ.get("VSEARCH_BENCH_RESULTS", Path(__file__).parent / "results"))
# What a benchmark keeps between runs (embeddings, a Milvus data dir); gitignored.
CACHE = Path(__file__).parent / "cache"

# Milvus compacts every 60 s (and re-indexes what it compacted): a segment set unchanged this long is final.
MILVUS_SETTLE_S = 75.0


@dataclass(frozen=True)
class Target:
    """One target of the performance issue: ``met`` is computed from ``measured``, never typed in."""
    name: str
    target: str
    measured: str
    met: bool


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_1m_at_end": round(load[0], 2)}  # written with the results, so: when the run ended


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def read_result(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def section(title: str, result: dict, *parts: Callable[[Doc, dict], None]) -> str:
    """A module's BENCHMARKS.md section: the ``## title`` heading, then each part's blocks, in order."""
    doc = Doc()
    doc.h(2, title)
    for part in parts:
        part(doc, result)
    return doc.markdown()


def target_bullets(doc: Doc, verdicts: list[Target]) -> None:
    """The section's own list of its targets ("Targets:" and one bullet each), when it has any."""
    if verdicts:
        doc.p("Targets:")
        doc.bullets([f"{t.name}: {t.target}, measured {t.measured}: **{'met' if t.met else 'missed'}**"
                     for t in verdicts])


def print_targets(verdicts: list[Target]) -> None:
    for t in verdicts:
        console.print(f"{'[green]met' if t.met else '[red]missed'}[/]: {t.name}: {t.measured} (target {t.target})")


def loadavg_sentence(result: dict) -> str:
    """`` 1-minute load average A at the start, B at the end (...)``, when the result recorded them."""
    if "loadavg_1m" not in result:
        return ""
    load = result["loadavg_1m"]
    return (f" 1-minute load average {load['start']} at the start, {load['end']} at the end (other jobs share this "
            "machine).")
