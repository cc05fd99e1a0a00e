"""The run: the headline (the CLI defaults, into an empty collection), then the knob sweep on a subset, in rounds of
alternating order, each run after the subset's ids were deleted so every run indexes the same images."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import gateway_rpc, vsearch_index
from benchmarks.common import console, write_result
from benchmarks.ingest.measure import measure
from benchmarks.ingest.plan import AFTER_DELETE_WAIT_S, DATASET, NAME, QUICK_SWEEP, SWEEP
from benchmarks.ingest.section import label, print_result, print_row
from server.settings import Settings

Knobs = tuple[int, int, bool]  # batch size, concurrent streams, resume check


def _clear(address: str, model: str, ids: list[str]) -> None:
    """Deletes ``ids`` through the gateway (so the next run indexes them again), then waits out the Strong-read
    window that follows a delete."""
    gateway_rpc.delete(address, model, ids)
    time.sleep(AFTER_DELETE_WAIT_S)


def _sweep_settings(defaults: Knobs, settings: tuple[Knobs, ...]) -> list[Knobs]:
    return list(dict.fromkeys([defaults, *settings]))


def _sweep_summary(key: Knobs, rows: list[dict], defaults: Knobs) -> dict:
    ips = [r["images_per_s"] for r in rows]
    b, c, resume = key
    return {"batch_size": b, "concurrency": c, "resume": resume, "is_default": key == defaults, "images_per_s": ips,
            "images_per_s_mean": round(statistics.fmean(ips), 1), "images_per_s_min": min(ips),
            "images_per_s_max": max(ips), "indexed": [r["indexed"] for r in rows],
            "errors": sum(r["errors"] for r in rows),
            "cpu_ms_per_image": {k: round(statistics.fmean(r["cpu_ms_per_image"][k] for r in rows), 3)
                                 for k in rows[0]["cpu_ms_per_image"]},
            "runs": rows}


def run(quick: bool = False, n_images: int | None = None, sweep_images: int | None = None, rounds: int | None = None,
        sweep: tuple[Knobs, ...] | None = None, settings: Settings | None = None) -> dict:
    """Indexes through a stack started with ``settings`` (default ``Settings()``) restricted to its first model, on
    a Milvus data dir of its own."""
    from extractors.datasets import load_fashion_mnist
    from launchers.ports import free_port
    from launchers.stack import Stack

    n_images = n_images or (2000 if quick else 70000)
    sweep_images = sweep_images or (1000 if quick else 10000)
    rounds = rounds or (1 if quick else 2)
    sweep = sweep or (QUICK_SWEEP if quick else SWEEP)
    settings = settings or Settings()
    model = settings.models[0]
    defaults = vsearch_index.index_defaults()
    settings_list = _sweep_settings(defaults, sweep)
    ids = load_fashion_mnist("all").ids[:sweep_images]
    results: dict = {"model": model, "dataset": DATASET, "quick": quick, "cli": vsearch_index.SHOWN,
                     "cli_defaults": {"batch_size": defaults[0], "concurrency": defaults[1], "resume": defaults[2]}}
    with tempfile.TemporaryDirectory(prefix="vsearch-bench-ingest-") as tmp:
        # Only the model being indexed is loaded into Triton: the gateway serves what Triton has ready.
        stack_settings = settings.model_copy(update={"models": [model], "milvus_data_dir": Path(tmp) / "milvus"})
        with Stack(stack_settings, gateway_port=free_port()) as stack:
            console.print(f"[bold]ingest[/]: {n_images:,} images with the CLI defaults (batch {defaults[0]}, "
                          f"{defaults[1]} streams) into an empty collection")
            results["headline"] = measure(stack, model, n_images, *defaults)
            print_row("headline", results["headline"])
            runs: dict[Knobs, list[dict]] = {s: [] for s in settings_list}
            for r in range(rounds):
                # every other round in reverse order, so a drift in the machine's load does not favour one setting
                for b, c, resume in settings_list if r % 2 == 0 else settings_list[::-1]:
                    _clear(stack.gateway.address, model, ids)
                    text = label(b, c, resume)
                    console.print(f"[bold]ingest sweep[/] round {r + 1}/{rounds}: {sweep_images:,} images, {text}")
                    row = measure(stack, model, sweep_images, b, c, resume)
                    print_row(text, row)
                    runs[(b, c, resume)].append(row)
    results["sweep"] = {"images": sweep_images, "rounds": rounds,
                        "settings": [_sweep_summary(key, rows, defaults) for key, rows in runs.items()]}
    # The best batch size and concurrency with the resume check as the CLI has it; --no-resume is a different job.
    same = [s for s in results["sweep"]["settings"] if s["resume"] == defaults[2]]
    best = max(same, key=lambda s: s["images_per_s_mean"])
    results["sweep"]["best"] = {k: v for k, v in best.items() if k != "runs"}
    print_result(results)
    console.print(f"written to {write_result(NAME, results)}")
    return results
