"""Dynamic batching in Triton: throughput and latency of single-image requests vs client concurrency, for several
``max_queue_delay_microseconds`` values, and the delay to use by default.

One export of the Fashion-MNIST ViT is copied under one name per delay (only the name and the delay differ), so one
``tritonserver`` serves them all and only the copy being measured is busy. Rows are measured concurrency by
concurrency, all delays in turn, so rows compared with each other are measured close together in time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as aioclient

from benchmarks.common import PROGRESS, Target, finish, loadavg, loadavg_sentence, section, step, target_bullets
from benchmarks.load import drive
from benchmarks.triton_stats import diff, mean_batch, settled_stats
from evaluation.document import Doc
from export.parity import real_images
from export.repository import export_repository
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from launchers.exporting import triton_model_config
from launchers.triton import TritonServer
from server.settings import Settings

NAME = "dynamic_batching"
MODEL = "dino_vit_femto_p7_fmnist"
DELAYS_US = (0, 100, 500, 2000, 5000)
CONCURRENCIES = (1, 4, 16, 64)
QUICK_DELAYS_US = (0, 500)
QUICK_CONCURRENCIES = (1, 16)
HEADLINE_CONCURRENCY = 16
TARGET_SPEEDUP = 2.0
# The rule that picks the default delay from the curve (choose_delay): a lone caller gains nothing from waiting for a
# batch, so the delay may cost it little; among the delays within that, the one that serves most under load.
C1_P50_SLACK_MS = 1.0
THROUGHPUT_TOLERANCE = 0.05
RULE = (f"among the delays whose concurrency-1 p50 is at most {C1_P50_SLACK_MS:g} ms above the smallest delay's, "
        "the smallest whose loaded throughput (geometric mean of inferences/s over the concurrencies above 1) is "
        f"within {THROUGHPUT_TOLERANCE:.0%} of the best of them")


def variant(delay_us: int) -> str:
    return f"{MODEL}_delay{delay_us}us"


def build_repository(repo: Path, delays: tuple[int, ...], settings: Settings) -> dict:
    """``repo/<MODEL>_delay<N>us/`` for every delay: one export, copied, each config renamed and given its delay."""
    base = repo.parent / "export"
    export_repository([MODEL], base, "cpu", triton_model_config(settings), parity=False)
    text = (base / MODEL / "config.pbtxt").read_text()
    for d in delays:
        shutil.copytree(base / MODEL, repo / variant(d))
        config = re.sub(r'^name: ".*"$', f'name: "{variant(d)}"', text, count=1, flags=re.M)
        config, n = re.subn(r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {d}", config)
        if n != 1:
            raise RuntimeError(f"no max_queue_delay_microseconds in the exported config:\n{text}")
        (repo / variant(d) / "config.pbtxt").write_text(config)
    return {"max_batch_size": settings.triton_max_batch_size,
            "preferred_batch_sizes": [b for b in settings.triton_preferred_batch_sizes
                                      if b <= settings.triton_max_batch_size],
            "instance_count": settings.triton_instance_count}


async def _drive(url: str, model: str, images: np.ndarray, concurrency: int, seconds: float) -> tuple[list, int, float]:
    """``concurrency`` tasks sending one image each, back to back, for ``seconds``: latencies (ms), errors, elapsed."""
    client = aioclient.InferenceServerClient(url)
    wanted = [aioclient.InferRequestedOutput(EMBEDDING_OUTPUT)]
    inputs = []
    for image in images:  # built once: a call times the request alone
        inp = aioclient.InferInput(INPUT_NAME, [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None])
        inputs.append(inp)

    async def call(i: int) -> tuple:
        await client.infer(model, [inputs[i]], outputs=wanted, client_timeout=30)
        return ()

    try:
        rows, errors, elapsed = await drive(call, len(inputs), concurrency, seconds)
    finally:
        await client.close()
    return [r[0] for r in rows], errors, elapsed


def measure(url: str, model: str, images: np.ndarray, concurrency: int, seconds: float, warmup_s: float) -> dict:
    asyncio.run(_drive(url, model, images, concurrency, warmup_s))
    before = settled_stats(url, model)
    latencies, errors, elapsed = asyncio.run(_drive(url, model, images, concurrency, seconds))
    d = diff(settled_stats(url, model), before)
    a = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "inferences_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "triton_inferences": d["inferences"], "triton_executions": d["executions"],
            "mean_batch": mean_batch(d),
            "queue_ms_per_request": round(d["queue_ns"] / d["requests"] / 1e6, 3) if d["requests"] else None,
            "compute_ms_per_request": round(d["compute_ns"] / d["requests"] / 1e6, 3) if d["requests"] else None}


def _row(result: dict, delay: int, concurrency: int) -> dict | None:
    return next((r for r in result["curve"].get(str(delay), []) if r["concurrency"] == concurrency), None)


def choose_delay(result: dict) -> dict:
    """``RULE`` applied to ``result["curve"]``: recomputed whenever the results are read."""
    delays = sorted(int(d) for d in result["curve"])
    c1 = {d: _row(result, d, 1) for d in delays}
    base = c1[delays[0]]["p50_ms"]
    within = [d for d in delays if c1[d]["p50_ms"] <= base + C1_P50_SLACK_MS]
    loaded = {d: float(np.exp(np.mean([np.log(max(r["inferences_per_s"], 1e-9)) for r in result["curve"][str(d)]
                                        if r["concurrency"] > 1]))) for d in within}
    best = max(loaded.values())
    eligible = [d for d in within if loaded[d] >= (1 - THROUGHPUT_TOLERANCE) * best]
    return {"delay_us": min(eligible), "rule": RULE, "latency_ok": within, "eligible": eligible,
            "loaded_inferences_per_s": {str(d): round(v, 1) for d, v in loaded.items()}}


def run(quick: bool = False) -> dict:
    """The curve, exported with ``Settings()``' Triton batching configuration and only the queue delay changed."""
    delays, concurrencies = (QUICK_DELAYS_US, QUICK_CONCURRENCIES) if quick else (DELAYS_US, CONCURRENCIES)
    seconds, warmup_s = (1.5, 0.3) if quick else (4.0, 1.0)
    images = real_images(28, 256)
    result: dict = {"quick": quick, "model": MODEL, "delays_us": list(delays), "concurrencies": list(concurrencies),
                    "seconds_per_row": seconds, "warmup_s": warmup_s, "curve": {str(d): [] for d in delays},
                    "loadavg_1m": {"start": loadavg()}}
    t_start = time.perf_counter()
    with PROGRESS, step("export and copy the repository", 1 + len(delays) * len(concurrencies)) as update, \
            tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        result["config"] = build_repository(repo, delays, Settings())
        update(description="starting tritonserver")
        with TritonServer(repo) as triton:
            update(advance=1)
            for c in concurrencies:
                for d in delays:
                    update(description=f"delay {d} us, concurrency {c}")
                    result["curve"][str(d)].append(measure(triton.grpc_url, variant(d), images, c, seconds, warmup_s))
                    update(advance=1)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["loadavg_1m"]["end"] = loadavg()
    result["recommended"] = choose_delay(result)
    return finish(NAME, result)


def targets(result: dict) -> list[Target]:
    d = choose_delay(result)["delay_us"]
    c1, c16 = _row(result, d, 1), _row(result, d, HEADLINE_CONCURRENCY)
    speedup = c16["inferences_per_s"] / c1["inferences_per_s"]
    return [Target(f"Triton throughput at concurrency {HEADLINE_CONCURRENCY} vs 1 ({result['model']}, "
                   f"max_queue_delay {d} us)", f">= {TARGET_SPEEDUP:g}x",
                   f"{speedup:.2f}x ({c16['inferences_per_s']:.0f} vs {c1['inferences_per_s']:.0f} inferences/s, "
                   f"mean batch {c16['mean_batch']})", speedup >= TARGET_SPEEDUP)]


def _curve(doc: Doc, result: dict) -> None:
    cfg = result["config"]
    doc.p(f"{result['model']} (28x28) served by `tritonserver` (python backend, ONNX Runtime), max batch size "
          f"{cfg['max_batch_size']}, preferred batch sizes {cfg['preferred_batch_sizes']}, {cfg['instance_count']} "
          f"instance; one copy of the model per `max_queue_delay_microseconds` value in one server. Load: one asyncio "
          "process (`tritonclient.grpc.aio`), each task sending one uint8 image at a time, "
          f"{result['seconds_per_row']:g} s per row after {result['warmup_s']:g} s of warm-up. Mean batch = Triton's "
          "inference count / execution count over the row; queue and compute are Triton's own per-request means."
          + loadavg_sentence(result))
    doc.table(["max queue delay", "concurrency", "inferences/s", "p50", "p99", "mean batch", "queue", "compute",
               "errors"],
              [[f"{d} us", str(r["concurrency"]), f"{r['inferences_per_s']:.0f}", f"{r['p50_ms']:.2f} ms",
                f"{r['p99_ms']:.2f} ms", str(r["mean_batch"]), f"{r['queue_ms_per_request']} ms",
                f"{r['compute_ms_per_request']} ms", str(r["errors"])]
               for d, rows in result["curve"].items() for r in rows])


def _recommendation(doc: Doc, result: dict) -> None:
    rec = choose_delay(result)
    doc.p(f"Recommended default: **max_queue_delay_microseconds = {rec['delay_us']}**, by the rule: "
          f"{rec['rule']}. Within the concurrency-1 latency allowance: "
          + ", ".join(f"{d} us ({rec['loaded_inferences_per_s'][str(d)]:.0f} inferences/s loaded)"
                      for d in rec["latency_ok"])
          + f"; within {THROUGHPUT_TOLERANCE:.0%} of the best of them: " + ", ".join(f"{d} us" for d in rec["eligible"])
          + ".")
    target_bullets(doc, targets(result))


def markdown(result: dict) -> str:
    return section("Dynamic batching in Triton (`benchmarks/dynamic_batching.py`)", result, _curve, _recommendation)


if __name__ == "__main__":  # as ``python -m benchmarks.run --only dynamic_batching``
    import sys

    from benchmarks.run import cli

    cli(["--only", NAME, *sys.argv[1:]])
