"""Shared benchmark plumbing: results files, targets, the machine, console output, pieces of the sections.

Every benchmark ``benchmarks/<name>`` has the same shape, so ``make bench`` runs them all and builds BENCHMARKS.md:
``run(quick=False) -> dict`` measures (``quick``: a bounded smoke run for the tests) and ends with ``finish``;
``markdown(result) -> str`` is its section, every sentence derived from ``result``; ``targets(result)`` lists the
issue's targets it measures, with the measured values."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evaluation.document import Doc

console = Console(log_path=False)  # every benchmark prints through this one (progress bars and log lines interleave)
# The one progress display: a run shows it (``with PROGRESS:``) and its steps add bars to it (``step``).
PROGRESS = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)
# Tests point this at a temporary folder so quick runs never overwrite the committed figures.
RESULTS = Path(os.environ.get("VSEARCH_BENCH_RESULTS", Path(__file__).parent / "results"))
# What a benchmark keeps between runs (embeddings, a Milvus data dir); gitignored.
CACHE = Path(__file__).parent / "cache"

# Milvus compacts every 60 s (and re-indexes what it compacted): a segment set unchanged this long is final.
MILVUS_SETTLE_S = 75.0
CPU_SPLIT = ("client", "gateway", "triton", "milvus")  # the processes whose CPU time a stack benchmark reports


@dataclass(frozen=True)
class Target:
    """One target of the performance issue: ``met`` is computed from ``measured``, never typed in."""
    name: str
    target: str
    measured: str
    met: bool


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def served_models() -> dict[str, str]:
    """{model: weights hash} of the models a stack serves now (``Settings().models``): recorded beside every result,
    so BENCHMARKS.md and the suite can tell figures of a model since retrained."""
    from extractors.registry import weights_hash
    from server.settings import Settings

    return {name: weights_hash(name) for name in Settings().models}


def stale_models(result: dict) -> dict[str, tuple[str, str]]:
    """{model: (hash measured, hash served now)} for each model whose weights changed since ``result`` was measured;
    a result from before hashes were recorded has every served model stale (hash measured "unrecorded")."""
    now = served_models()
    then = result.get("served_models")
    if then is None:
        return {m: ("unrecorded", h) for m, h in now.items()}
    return {m: (then.get(m, "absent"), h) for m, h in now.items() if then.get(m) != h}


def write_result(name: str, payload: dict) -> Path:
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "loadavg_1m_at_end": loadavg()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine, "served_models": served_models(), **payload}, indent=2))
    return path


def read_result(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def finish(name: str, result: dict) -> dict:
    """The end of a run: ``result`` written, then printed as the section BENCHMARKS.md will show for it."""
    path = write_result(name, result)
    console.print(Markdown(importlib.import_module(f"benchmarks.{name}").markdown(read_result(name))))
    console.print(f"written to {path}")
    return result


@contextlib.contextmanager
def step(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A bar on ``PROGRESS`` while the block runs; yields its ``update`` (``advance=``, ``completed=``, ...)."""
    task = PROGRESS.add_task(description, total=total)
    try:
        yield functools.partial(PROGRESS.update, task)
    finally:
        PROGRESS.remove_task(task)


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


def loadavg_sentence(result: dict) -> str:
    """`` 1-minute load average A at the start, B at the end (...)``, when the result recorded them."""
    if "loadavg_1m" not in result:
        return ""
    load = result["loadavg_1m"]
    return (f" 1-minute load average {load['start']} at the start, {load['end']} at the end (other jobs share this "
            "machine).")


def cpu_split(cpu_ms: dict[str, float]) -> str:
    """``client / gateway / Triton / Milvus`` milliseconds (``-`` for a process not measured)."""
    return " / ".join(f"{cpu_ms[k]:.2f}" if k in cpu_ms else "-" for k in CPU_SPLIT)


def png_bytes(image) -> bytes:
    """A PIL image as the PNG bytes a client would send (lossless)."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
