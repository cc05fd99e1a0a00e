"""The run: the sgemm peak, one export of every model (cpu target), one ``tritonserver`` serving them, then per
model: FLOPs, ONNX Runtime options chosen, parity with torch, the three paths timed at every batch size, and an
operator profile at the target batch."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import tritonclient.grpc as grpcclient
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.common import console, write_result
from benchmarks.embedding.onnxruntime_options import tune_onnxruntime
from benchmarks.embedding.plan import (
    BATCHES,
    HEADLINE,
    METHODS,
    MODELS,
    NAME,
    QUICK_MODELS,
    TARGET_BATCH,
    register_headline,
    served_model_code,
)
from benchmarks.embedding.profile import profile_breakdown
from benchmarks.embedding.section import print_result
from benchmarks.embedding.timing import flops_per_image, interleaved, sgemm_peak
from export.parity import compare, real_images
from export.repository import export_repository
from extractors.registry import get_spec, load_extractor
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from launchers.exporting import triton_model_config
from launchers.triton import TritonServer
from server.settings import Settings


def triton_caller(url: str, model: str) -> Callable[[np.ndarray], np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    wanted = [grpcclient.InferRequestedOutput(EMBEDDING_OUTPUT)]

    def call(x: np.ndarray) -> np.ndarray:
        inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], outputs=wanted).as_numpy(EMBEDDING_OUTPUT)

    return call


# -------------------------------------------------------------------------------------------------------------- run


def run(quick: bool = False, models: list[str] | None = None, settings: Settings | None = None) -> dict:
    """Every path for every model; the Triton models are exported with ``settings``' serving configuration
    (default ``Settings()``)."""
    settings = settings or Settings()
    register_headline()
    models = models or (QUICK_MODELS if quick else MODELS)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    budget = {"select_s": 0.6, "select_min_rounds": 2, "batch_s": 0.8, "min_rounds": 2} if quick else \
        {"select_s": 10.0, "select_min_rounds": 2, "batch_s": 8.0, "min_rounds": 3}
    peak_sizes, peak_repeats = ((2048,), 3) if quick else ((2048, 4096), 5)
    results: dict = {"quick": quick, "threads": threads, "batches": list(BATCHES), "target_batch": TARGET_BATCH,
                     "headline": HEADLINE, "budget": budget, "models": {},
                     "flop_convention": "torch.utils.flop_counter.FlopCounterMode, one multiply-add = 2 FLOPs "
                                        "(matmul, convolution and attention; elementwise ops not counted)",
                     "torch": torch.__version__, "onnxruntime": ort.__version__}
    steps = 2 + len(models) * (4 + len(BATCHES))
    progress = Progress(TextColumn("{task.description:<60}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console)
    code = served_model_code()
    results["triton_session_options"] = {"fuse_attention": True, "allow_spinning": code.DEFAULT_ALLOW_SPINNING,
                                         "max_batch_pixels": code.DEFAULT_MAX_BATCH_PIXELS, "io_binding": False}
    results["loadavg_1m"] = {"start": round(os.getloadavg()[0], 2)}
    t_start = time.perf_counter()
    with progress, tempfile.TemporaryDirectory() as tmp:
        task = progress.add_task("sgemm peak (numpy float32 matmul)", total=steps)
        results["sgemm"] = sgemm_peak(peak_sizes, peak_repeats)
        peak = results["sgemm"]["gflops"]
        progress.update(task, advance=1, description=f"export {', '.join(models)} (cpu target)")
        repo = Path(tmp) / "repo"
        export_repository(models, repo, "cpu", triton_model_config(settings), parity=False)
        progress.update(task, advance=1, description="starting tritonserver")
        with TritonServer(repo) as triton:
            for name in models:
                results["models"][name] = _measure_model(name, repo, triton.grpc_url, threads, budget, peak,
                                                         progress, task)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["loadavg_1m"]["end"] = round(os.getloadavg()[0], 2)
    print_result(results)
    console.print(f"written to {write_result(NAME, results)}")
    return results


def _measure_model(name: str, repo: Path, url: str, threads: int, budget: dict, peak: float, progress: Progress,
                   task) -> dict:
    spec = get_spec(name)
    progress.update(task, description=f"{name}: torch model, FLOPs")
    model = load_extractor(name)
    gflop = flops_per_image(model, spec.input_size) / 1e9
    images = real_images(spec.input_size, max(BATCHES))
    batches = {b: np.ascontiguousarray(images[:b]) for b in BATCHES}
    target = batches[TARGET_BATCH] if TARGET_BATCH in batches else batches[max(BATCHES)]
    progress.update(task, advance=1, description=f"{name}: choosing ONNX Runtime options at batch {len(target)}")
    ort_run, ort_info = tune_onnxruntime(repo / name / "1" / "model.onnx", spec, target, threads,
                                         budget["select_s"], budget["select_min_rounds"])
    progress.update(task, advance=1, description=f"{name}: parity")
    triton = triton_caller(url, name)
    with torch.inference_mode():
        ref = model(torch.from_numpy(batches[min(8, max(BATCHES))])).numpy()
    parity = {}
    for method, out in (("onnxruntime", ort_run(batches[min(8, max(BATCHES))])),
                        ("triton", triton(batches[min(8, max(BATCHES))]))):
        cos, diff = compare(ref, out)
        parity[method] = {"min_cosine": round(cos, 7), "max_abs_diff": float(f"{diff:.3g}")}
    progress.update(task, advance=1)

    def torch_call(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    rows = []
    for b, x in batches.items():
        progress.update(task, description=f"{name}: batch {b}, torch / ONNX Runtime / Triton")
        t = interleaved({"torch": lambda x=x: torch_call(x), "onnxruntime": lambda x=x: ort_run(x),
                         "triton": lambda x=x: triton(x)}, budget["batch_s"], budget["min_rounds"])
        for method in METHODS:
            ips = b / t[method]["best_s"]
            rows.append({"batch": b, "method": method, "images_per_s": round(ips, 2),
                         "images_per_s_p50": round(b / t[method]["p50_s"], 2),
                         "best_ms": round(t[method]["best_s"] * 1e3, 3), "p50_ms": round(t[method]["p50_s"] * 1e3, 3),
                         "calls": t[method]["calls"], "gflops_per_s": round(ips * gflop, 2),
                         "fraction_of_peak": round(ips * gflop / peak, 4)})
        progress.update(task, advance=1)
    progress.update(task, description=f"{name}: operator profile at batch {len(target)}")
    profile = profile_breakdown(model, repo / name / "1" / "model.onnx", ort_info["chosen"], spec, target, threads,
                                gflop)
    progress.update(task, advance=1)
    by = {(r["batch"], r["method"]): r["images_per_s"] for r in rows}
    return {"input_size": spec.input_size, "dim": spec.dim, "description": spec.description,
            "gflops_per_image": round(gflop, 4), "onnxruntime_options": ort_info, "parity": parity, "rows": rows,
            "profile": profile,
            "ort_vs_torch": {str(b): round(by[(b, "onnxruntime")] / by[(b, "torch")], 3) for b in BATCHES},
            "triton_vs_ort": {str(b): round(by[(b, "triton")] / by[(b, "onnxruntime")], 3) for b in BATCHES}}

