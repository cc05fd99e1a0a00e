"""The run: the sgemm peak, one export of every model, one ``tritonserver`` serving them, then per model: FLOPs, ONNX
Runtime options, parity with torch, the three paths timed at every batch size, an operator profile."""

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

from benchmarks.common import PROGRESS, finish, loadavg, step
from benchmarks.embedding.onnxruntime_options import tune_onnxruntime
from benchmarks.embedding.profile import profile_breakdown
from benchmarks.embedding.timing import flops_per_image, interleaved, sgemm_peak
from export import onnx_cpu
from export.parity import compare, real_images
from export.repository import export_repository
from extractors.registry import IMAGENET_MEAN, IMAGENET_STD, REGISTRY, ExtractorSpec, get_spec, load_extractor, register
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from extractors.vit import build_vit
from launchers.exporting import triton_model_config
from launchers.triton import TritonServer
from server.settings import Settings

NAME = "embedding"
HEADLINE = "vit_small_p16_224_random"
MODELS = [HEADLINE, "dino_vit_femto_p7_fmnist", "efficientnet_lite0_imagenet"]
QUICK_MODELS = ["dino_vit_femto_p7_fmnist"]
BATCHES = (1, 8, 32)
TARGET_BATCH = 32
TARGET_RATIO = 1.2
METHODS = ("torch", "onnxruntime", "triton")


def register_headline() -> None:
    """The production-shaped ViT-S/16 (224x224, 6 heads, dim 384) with seeded random weights: timing needs the shape,
    not the weights. Registered in this process only, so the export and Triton code paths take it like any model."""
    if HEADLINE not in REGISTRY:
        register(ExtractorSpec(
            name=HEADLINE, family="vit", description="ViT-S/16 at 224x224, random weights (benchmark only)",
            input_size=224, dim=384, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            build=lambda: build_vit("small", 16, img_size=224), weights=lambda: None, trained_on="nothing"))


def triton_caller(url: str, model: str) -> Callable[[np.ndarray], np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    wanted = [grpcclient.InferRequestedOutput(EMBEDDING_OUTPUT)]

    def call(x: np.ndarray) -> np.ndarray:
        inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], outputs=wanted).as_numpy(EMBEDDING_OUTPUT)

    return call


def run(quick: bool = False) -> dict:
    """Every path for every model; the Triton models are exported with ``Settings()``' serving configuration."""
    register_headline()
    models = QUICK_MODELS if quick else MODELS
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    budget = {"select_s": 0.6, "select_min_rounds": 2, "batch_s": 0.8, "min_rounds": 2} if quick else \
        {"select_s": 10.0, "select_min_rounds": 2, "batch_s": 8.0, "min_rounds": 3}
    peak_sizes, peak_repeats = ((2048,), 3) if quick else ((2048, 4096), 5)
    results: dict = {"quick": quick, "threads": threads, "batches": list(BATCHES), "target_batch": TARGET_BATCH,
                     "headline": HEADLINE, "budget": budget, "models": {},
                     "flop_convention": "torch.utils.flop_counter.FlopCounterMode, one multiply-add = 2 FLOPs "
                                        "(matmul, convolution and attention; elementwise ops not counted)",
                     "torch": torch.__version__, "onnxruntime": ort.__version__,
                     "triton_session_options": {"fuse_attention": True,
                                                "allow_spinning": onnx_cpu.DEFAULT_ALLOW_SPINNING,
                                                "max_batch_pixels": onnx_cpu.DEFAULT_MAX_BATCH_PIXELS,
                                                "io_binding": False},
                     "loadavg_1m": {"start": loadavg()}}
    t_start = time.perf_counter()
    with PROGRESS, step("sgemm peak (numpy float32 matmul)", 2 + len(models) * (4 + len(BATCHES))) as update, \
            tempfile.TemporaryDirectory() as tmp:
        results["sgemm"] = sgemm_peak(peak_sizes, peak_repeats)
        update(advance=1, description=f"export {', '.join(models)} (cpu target)")
        repo = Path(tmp) / "repo"
        export_repository(models, repo, "cpu", triton_model_config(Settings()), parity=False)
        update(advance=1, description="starting tritonserver")
        with TritonServer(repo) as triton:
            for name in models:
                results["models"][name] = _measure_model(name, repo, triton.grpc_url, threads, budget,
                                                         results["sgemm"]["gflops"], update)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["loadavg_1m"]["end"] = loadavg()
    return finish(NAME, results)


def _measure_model(name: str, repo: Path, url: str, threads: int, budget: dict, peak: float,
                   update: Callable[..., None]) -> dict:
    spec = get_spec(name)
    update(description=f"{name}: torch model, FLOPs")
    model = load_extractor(name)
    gflop = flops_per_image(model, spec.input_size) / 1e9
    images = real_images(spec.input_size, max(BATCHES))
    batches = {b: np.ascontiguousarray(images[:b]) for b in BATCHES}
    target, onnx_path = batches[TARGET_BATCH], repo / name / "1" / "model.onnx"
    update(advance=1, description=f"{name}: choosing ONNX Runtime options at batch {TARGET_BATCH}")
    ort_run, ort_info = tune_onnxruntime(onnx_path, spec, target, threads, budget["select_s"],
                                         budget["select_min_rounds"])
    update(advance=1, description=f"{name}: parity")
    triton = triton_caller(url, name)

    def torch_call(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    ref, parity = torch_call(batches[8]).numpy(), {}
    for method, out in (("onnxruntime", ort_run(batches[8])), ("triton", triton(batches[8]))):
        cos, diff = compare(ref, out)
        parity[method] = {"min_cosine": round(cos, 7), "max_abs_diff": float(f"{diff:.3g}")}
    update(advance=1)
    rows = []
    for b, x in batches.items():
        update(description=f"{name}: batch {b}, torch / ONNX Runtime / Triton")
        t = interleaved({"torch": lambda x=x: torch_call(x), "onnxruntime": lambda x=x: ort_run(x),
                         "triton": lambda x=x: triton(x)}, budget["batch_s"], budget["min_rounds"])
        for method in METHODS:
            ips = b / t[method]["best_s"]
            rows.append({"batch": b, "method": method, "images_per_s": round(ips, 2),
                         "images_per_s_p50": round(b / t[method]["p50_s"], 2),
                         "best_ms": round(t[method]["best_s"] * 1e3, 3), "p50_ms": round(t[method]["p50_s"] * 1e3, 3),
                         "calls": t[method]["calls"], "gflops_per_s": round(ips * gflop, 2),
                         "fraction_of_peak": round(ips * gflop / peak, 4)})
        update(advance=1)
    update(description=f"{name}: operator profile at batch {TARGET_BATCH}")
    profile = profile_breakdown(model, onnx_path, ort_info["chosen"], spec, target, threads, gflop)
    update(advance=1)
    by = {(r["batch"], r["method"]): r["images_per_s"] for r in rows}
    return {"input_size": spec.input_size, "dim": spec.dim, "description": spec.description,
            "gflops_per_image": round(gflop, 4), "onnxruntime_options": ort_info, "parity": parity, "rows": rows,
            "profile": profile,
            "ort_vs_torch": {str(b): round(by[(b, "onnxruntime")] / by[(b, "torch")], 3) for b in BATCHES},
            "triton_vs_ort": {str(b): round(by[(b, "triton")] / by[(b, "onnxruntime")], 3) for b in BATCHES}}

