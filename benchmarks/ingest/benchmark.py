"""The run: the headline (the CLI defaults, into an empty collection), then the knob sweep; each run's split: CPU
seconds of every process, the gateway's RPC times (its metrics), Triton's statistics, what PNG encoding costs."""

from __future__ import annotations

import functools
import io
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks import vsearch_index
from benchmarks.common import console, finish
from benchmarks.cpu import CpuMeter
from benchmarks.ingest.section import label
from benchmarks.triton_stats import diff, mean_batch, stats_at
from server.settings import Settings

NAME = "ingest"
Knobs = tuple[int, int, bool]  # batch size, concurrent streams, resume check
# Compared on a subset; the CLI defaults are always added.
SWEEP: tuple[Knobs, ...] = ((64, 4, True), (128, 4, True), (64, 8, True), (64, 2, True), (64, 4, False))
QUICK_SWEEP: tuple[Knobs, ...] = ((128, 4, True), (64, 4, False))
# After a delete the gateway reads Strong for 6 s (server/vector_store/milvus.py); wait it out so the resume check
# of the next run costs what it costs on a collection nobody just deleted from.
AFTER_DELETE_WAIT_S = 6.5


def gateway_metrics(port: int) -> dict[str, float]:
    """RPC counts and summed seconds by method from the gateway's Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vsearch_request_seconds_sum":
                out[f"{s.labels['method']}_s"] = s.value
            elif s.name == "vsearch_request_seconds_count":
                out[f"{s.labels['method']}_n"] = s.value
    return out


@functools.cache
def png_encode_seconds(n: int) -> float:
    """Seconds to encode the first ``n`` Fashion-MNIST images to PNG on one thread, the way the SDK sends a PIL image.
    Measured here, apart: the command's own process cannot be timed inside."""
    from extractors.datasets import load_fashion_mnist

    ds = load_fashion_mnist("all")
    images = [ds.pil(i) for i in range(min(n, len(ds)))]
    t0 = time.perf_counter()
    for image in images:
        image.save(io.BytesIO(), "PNG")
    return time.perf_counter() - t0


def measure(stack, model: str, n: int, batch_size: int, concurrency: int, resume: bool = True) -> dict:
    """One ``vsearch index --dataset fashion-mnist --limit n`` run through ``stack``, with its split."""
    meter = CpuMeter({"gateway": stack.gateway.proc.pid, "triton": stack.triton.pid, "milvus": stack.milvus.pid})
    g0, t0 = gateway_metrics(stack.gateway.metrics_port), stats_at(stack.triton.grpc_url, model)
    meter.start()
    summary, run = vsearch_index.index(stack.gateway.address, model, n, batch_size=batch_size,
                                       concurrency=concurrency, resume=resume)
    cpu = {"client": round(run.cpu_s, 6), **meter.stop()}
    g = diff(gateway_metrics(stack.gateway.metrics_port), g0)
    t = diff(stats_at(stack.triton.grpc_url, model), t0)
    png_s = png_encode_seconds(n)
    done = max(summary["indexed"], 1)
    row = {"batch_size": batch_size, "concurrency": concurrency, "resume": resume, "images": n,
           "indexed": summary["indexed"], "skipped_existing": summary["skipped_existing"], "errors": summary["errors"],
           "seconds": summary["seconds"], "images_per_s": summary["images_per_s"], "wall_s": round(run.wall_s, 2),
           "cpu_s": cpu, "cpu_ms_per_image": {k: round(v * 1e3 / done, 3) for k, v in cpu.items()},
           "client_png_encode_s": round(png_s, 3), "client_png_encode_us_per_image": round(png_s * 1e6 / n, 1)}
    if g.get("Upsert_n"):
        row["gateway"] = {"upsert_rpcs": int(g["Upsert_n"]), "upsert_rpc_s": round(g["Upsert_s"], 2),
                          "upsert_rpc_mean_ms": round(g["Upsert_s"] * 1e3 / g["Upsert_n"], 1),
                          "get_rpcs": int(g.get("Get_n", 0)), "get_rpc_s": round(g.get("Get_s", 0.0), 2),
                          "get_rpc_mean_ms": round(g.get("Get_s", 0.0) * 1e3 / max(g.get("Get_n", 0), 1), 1)}
    if t["executions"]:
        row["triton"] = {"requests": t["requests"], "executions": t["executions"], "inferences": t["inferences"],
                         "mean_batch": mean_batch(t, 1), "compute_s": round(t["compute_ns"] / 1e9, 2),
                         "queue_s": round(t["queue_ns"] / 1e9, 2),
                         "compute_ms_per_image": round(t["compute_ns"] / 1e6 / max(t["inferences"], 1), 3)}
    return row


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


def _print_row(text: str, r: dict) -> None:
    console.print(f"{text}: {r['indexed']:,}/{r['images']:,} indexed, {r['images_per_s']} images/s, "
                  f"{r['seconds']} s (wall {r['wall_s']} s), {r['errors']} errors")


def run(quick: bool = False) -> dict:
    """Indexes through a stack started with ``Settings()``, its first model only, on a Milvus data dir of its own."""
    from extractors.datasets import load_fashion_mnist
    from launchers.ports import free_port
    from launchers.stack import Stack

    n_images, sweep_images, rounds = (2000, 1000, 1) if quick else (70000, 10000, 2)
    settings = Settings()
    model = settings.models[0]
    defaults = vsearch_index.index_defaults()
    knobs = list(dict.fromkeys([defaults, *(QUICK_SWEEP if quick else SWEEP)]))
    ids = load_fashion_mnist("all").ids[:sweep_images]
    results: dict = {"model": model, "dataset": vsearch_index.DATASET, "quick": quick, "cli": vsearch_index.SHOWN,
                     "cli_defaults": {"batch_size": defaults[0], "concurrency": defaults[1], "resume": defaults[2]}}
    with tempfile.TemporaryDirectory(prefix="vsearch-bench-ingest-") as tmp:
        # Only the model being indexed is loaded into Triton: the gateway serves what Triton has ready.
        stack_settings = settings.model_copy(update={"models": [model], "milvus_data_dir": Path(tmp) / "milvus"})
        with Stack(stack_settings, gateway_port=free_port()) as stack:
            console.print(f"[bold]ingest[/]: {n_images:,} images with the CLI defaults (batch {defaults[0]}, "
                          f"{defaults[1]} streams) into an empty collection")
            results["headline"] = measure(stack, model, n_images, *defaults)
            _print_row("headline", results["headline"])
            runs: dict[Knobs, list[dict]] = {k: [] for k in knobs}
            for r in range(rounds):
                # every other round in reverse order, so a drift in the machine's load does not favour one setting
                for b, c, resume in knobs if r % 2 == 0 else knobs[::-1]:
                    vsearch_index.delete(stack.gateway.address, model, ids)  # so this run indexes them again
                    time.sleep(AFTER_DELETE_WAIT_S)
                    text = label(b, c, resume)
                    console.print(f"[bold]ingest sweep[/] round {r + 1}/{rounds}: {sweep_images:,} images, {text}")
                    row = measure(stack, model, sweep_images, b, c, resume)
                    _print_row(text, row)
                    runs[(b, c, resume)].append(row)
    results["sweep"] = {"images": sweep_images, "rounds": rounds,
                        "settings": [_sweep_summary(key, rows, defaults) for key, rows in runs.items()]}
    # The best batch size and concurrency with the resume check as the CLI has it; --no-resume is a different job.
    same = [s for s in results["sweep"]["settings"] if s["resume"] == defaults[2]]
    best = max(same, key=lambda s: s["images_per_s_mean"])
    results["sweep"]["best"] = {k: v for k, v in best.items() if k != "runs"}
    return finish(NAME, results)
