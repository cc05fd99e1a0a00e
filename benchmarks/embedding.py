"""Embedding throughput: torch eager vs ONNX Runtime (tuned) vs Triton, per model and batch size, against this machine's
measured single-precision matmul peak.

Three models: a ViT-S/16 at 224x224 (the production shape; random weights, registered here under ``HEADLINE``),
our Fashion-MNIST ViT and EfficientNet-Lite0. Every path computes the same thing: uint8 pixels in, unit-norm
embedding out.

- torch: the registry's ``EmbeddingModel`` in eager mode (``inference_mode``, ``torch.set_num_threads(cores)``).
- ONNX Runtime: the graph ``export_repository`` writes for Triton, in a session built by the served model's own code
  (``export/onnx_cpu.py``: embedding output only, attention fused). The session options are chosen here by
  measurement at the target batch (fused attention or not, thread spinning or not, then IO binding or not) and
  recorded; the cost of building a session from ``model.onnx`` vs from a cached optimised model is recorded too.
- Triton: the real ``tritonserver`` serving that repository (cpu target, python backend running ONNX Runtime); one
  gRPC request carries the whole batch.

The three are timed in interleaved rounds (one call of each per round, the order rotating), so a background job on
this shared machine slows all of them alike; images/s come from the fastest call of each (the 0th percentile: the
least disturbed), p50 is recorded next to it. FLOPs per image are counted by ``torch.utils.flop_counter`` (one
multiply-add = 2 FLOPs; matmuls, convolutions and attention only). The peak is numpy's float32 matmul (sgemm) on
large square matrices, best of several, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import torch
import tritonclient.grpc as grpcclient
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Target, write_result
from export.parity import compare, real_images
from export.repository import export_repository
from extractors.registry import IMAGENET_MEAN, IMAGENET_STD, REGISTRY, ExtractorSpec, get_spec, load_extractor, register
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from extractors.vit import build_vit
from launchers.triton import TritonServer

console = Console()
NAME = "embedding"
HEADLINE = "vit_small_p16_224_random"
MODELS = [HEADLINE, "dino_vit_femto_p7_fmnist", "efficientnet_lite0_imagenet"]
QUICK_MODELS = ["dino_vit_femto_p7_fmnist"]
BATCHES = (1, 8, 32)
TARGET_BATCH = 32
TARGET_RATIO = 1.2
METHODS = ("torch", "onnxruntime", "triton")


def register_headline() -> str:
    """The production-shaped ViT-S/16 (224x224, 6 heads, dim 384) with seeded random weights: timing needs the shape,
    not the weights. Registered in this process only, so the export and Triton code paths take it like any model."""
    if HEADLINE not in REGISTRY:
        register(ExtractorSpec(
            name=HEADLINE, family="vit", description="ViT-S/16 at 224x224, random weights (benchmark only)",
            input_size=224, dim=384, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            build=lambda: build_vit("small", 16, img_size=224), weights=lambda: None, trained_on="nothing"))
    return HEADLINE


def served_model_code() -> ModuleType:
    """``export/onnx_cpu.py``: the graph rewrites and session options the served CPU model uses."""
    import export.onnx_cpu

    return export.onnx_cpu


# ------------------------------------------------------------------------------------------------------- measuring


def sgemm_peak(sizes: tuple[int, ...], repeats: int) -> dict:
    """GFLOP/s of numpy float32 ``a @ b`` (n x n, 2 n^3 FLOPs), best of ``repeats`` per size."""
    rng = np.random.default_rng(0)
    per_size = {}
    for n in sizes:
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        a @ b
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        per_size[str(n)] = round(2 * n**3 / best / 1e9, 1)
    return {"gflops": max(per_size.values()), "per_size": per_size, "repeats": repeats,
            "library": "numpy float32 matmul (" + _blas_name() + ")"}


def _blas_name() -> str:
    with contextlib.suppress(Exception):
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    return "numpy's BLAS"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], budget_s: float, min_rounds: int, max_rounds: int = 1000,
                warmup: bool = True) -> dict[str, dict]:
    """One call of each function per round, the order rotating each round, until ``budget_s`` has passed and at least
    ``min_rounds`` rounds are done (after one unrecorded call of each when ``warmup``). Returns per function: best and
    p50 seconds per call, and the number of calls."""
    names = list(fns)
    for name in names if warmup else []:  # first calls allocate, open connections, fill caches
        fns[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.perf_counter()
    r = 0
    while r < max_rounds and (r < min_rounds or time.perf_counter() - t0 < budget_s):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(_timed(fns[name]))
        r += 1
    return {n: {"best_s": min(s), "p50_s": float(np.median(s)), "calls": len(s)} for n, s in samples.items()}


def flops_per_image(model: torch.nn.Module, size: int) -> int:
    """FLOPs of one image, one multiply-add = 2. Attention is counted through torch's math implementation of
    ``scaled_dot_product_attention`` (two batched matmuls): the counter does not see inside the fused CPU kernel."""
    x = torch.zeros((1, 3, size, size), dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        model(x)
    return int(counter.get_total_flops())


class OrtRunner:
    """One ONNX Runtime session run one way: ``session.run`` in chunks of at most ``max_batch_pixels`` input pixels
    (the served model's ``run_in_chunks``; 0 = the whole batch in one call), or the same chunks through IO binding
    (each chunk's input and its slice of one preallocated output bound once per input array, then
    ``run_with_iobinding``)."""

    def __init__(self, session: ort.InferenceSession, dim: int, max_batch_pixels: int, io_binding: bool) -> None:
        self.session, self.dim, self.max_batch_pixels, self.io_binding = session, dim, max_batch_pixels, io_binding
        self._bound: dict[int, tuple[np.ndarray, np.ndarray, list[ort.IOBinding]]] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        code = served_model_code()
        if not self.io_binding:
            return code.run_in_chunks(self.session, [EMBEDDING_OUTPUT], INPUT_NAME, x, self.max_batch_pixels)[0]
        entry = self._bound.get(id(x))
        if entry is None:
            out = np.empty((len(x), self.dim), dtype=np.float32)
            step = code.images_per_call(len(x), x.shape[-2], x.shape[-1], self.max_batch_pixels)
            bindings = []
            for i in range(0, len(x), step):
                b = self.session.io_binding()
                b.bind_cpu_input(INPUT_NAME, x[i:i + step])
                chunk = out[i:i + step]
                b.bind_output(EMBEDDING_OUTPUT, "cpu", 0, np.float32, list(chunk.shape), chunk.ctypes.data)
                bindings.append(b)
            entry = self._bound[id(x)] = (x, out, bindings)  # x kept alive: its id stays its own
        for b in entry[2]:
            self.session.run_with_iobinding(b)
        return entry[1]


def _label(o: dict) -> str:
    chunk = "whole batch per call" if not o["max_batch_pixels"] else \
        f"calls of <= {o['max_batch_pixels'] // (224 * 224)}x224x224 px"
    return ", ".join(["fused attention" if o["fuse_attention"] else "plain graph",
                      "spinning" if o["allow_spinning"] else "no spinning", chunk,
                      "IO binding" if o["io_binding"] else "session.run"])


_OPTION_INDEX = {"fuse_attention": 0, "allow_spinning": 1, "max_batch_pixels": 2, "io_binding": 3}


def tune_onnxruntime(path: Path, spec: ExtractorSpec, x: np.ndarray, threads: int, budget_s: float,
                     min_rounds: int) -> tuple[OrtRunner, dict]:
    """Chooses the session options one at a time, each by measurement at the target batch ``x`` against the best so
    far (re-measured in the same interleaved rounds): the graph (attention fused or not, ViTs only), thread spinning,
    the largest batch per session call, then IO binding vs ``session.run``. Returns the runner and what was measured.
    """
    code = served_model_code()
    sessions: dict[tuple[bool, bool], ort.InferenceSession] = {}

    def runner(o: dict) -> OrtRunner:
        key = (o["fuse_attention"], o["allow_spinning"])
        if key not in sessions:
            sessions[key] = code.build_session(str(path), threads, key[1], key[0], outputs=[EMBEDDING_OUTPUT])
            sessions[key].run([EMBEDDING_OUTPUT], {INPUT_NAME: x})  # warm-up, once per session
        return OrtRunner(sessions[key], spec.dim, o["max_batch_pixels"], o["io_binding"])

    best = {"fuse_attention": spec.family == "vit", "allow_spinning": code.DEFAULT_ALLOW_SPINNING,
            "max_batch_pixels": 0, "io_binding": False}
    pixels = x.shape[-2] * x.shape[-1]
    stages = [("fuse_attention", [False, True] if spec.family == "vit" else [False]),
              ("allow_spinning", [True, False]),
              # only the sizes that change the number of images per call at this batch
              ("max_batch_pixels", list({code.images_per_call(len(x), *x.shape[-2:], p): p for p in
                                         (0, 16 * 224 * 224, 8 * 224 * 224, 4 * 224 * 224)}.values())),
              ("io_binding", [False, True])]
    measured = []
    for option, values in stages:
        if len(values) < 2:
            continue
        options = {_label({**best, option: v}): {**best, option: v} for v in values}
        runners = {k: runner(o) for k, o in options.items()}
        t = interleaved({k: (lambda r=r: r(x)) for k, r in runners.items()}, budget_s / len(stages), min_rounds,
                        warmup=False)
        winner = min(t, key=lambda k: t[k]["best_s"])
        measured.append({"option": option, "chosen": options[winner][option], "candidates": [
            {"options": k, "images_per_s": round(len(x) / v["best_s"], 2), "calls": v["calls"]} for k, v in t.items()]})
        best = options[winner]
    info = {"chosen": best, "label": _label(best), "threads": threads, "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_ALL", "selected_at_batch": len(x), "stages": measured,
            "images_per_call_at_target": code.images_per_call(len(x), *x.shape[-2:], best["max_batch_pixels"]),
            "pixels_per_image": pixels, "session_create_s": session_creation(path, best, threads)}
    return runner(best), info


def session_creation(path: Path, options: dict, threads: int) -> dict:
    """Seconds to build the chosen session from ``model.onnx`` (load, cut, fuse, optimise) vs from an optimised model
    ONNX Runtime saved to disk on the first build (loaded with optimisations off: they are already in it)."""
    code = served_model_code()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        code.build_session(str(path), threads, options["allow_spinning"], options["fuse_attention"],
                           outputs=[EMBEDDING_OUTPUT])
        from_onnx = time.perf_counter() - t0
        graph = onnx.load(str(path))
        code.keep_outputs(graph, [EMBEDDING_OUTPUT])
        if options["fuse_attention"]:
            code.fuse_attention(graph)
        opts = code.session_options(threads, options["allow_spinning"])
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # not the warning that the saved model is for this machine only: it is
        ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        opts = code.session_options(threads, options["allow_spinning"])
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        t0 = time.perf_counter()
        ort.InferenceSession(str(Path(tmp) / "optimized.onnx"), opts, providers=["CPUExecutionProvider"])
        from_cache = time.perf_counter() - t0
    return {"from_onnx": round(from_onnx, 3), "from_cached_optimized": round(from_cache, 3)}


# The kernels that carry the counted FLOPs (matmuls, convolutions, attention); everything else is "other".
TORCH_FLOP_OPS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::mkldnn_convolution", "aten::_convolution",
                  "aten::thnn_conv2d", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_nnpack_spatial_convolution", "aten::convolution"}
ORT_FLOP_OPS = {"MatMul", "FusedMatMul", "Gemm", "Attention", "MultiHeadAttention", "Conv", "FusedConv", "NchwcConv",
                "FusedGemm", "MatMulNBits"}


def _split(times_us: dict[str, float], flop_ops: set[str], gflop: float, wall_s: float) -> dict:
    total = sum(times_us.values())
    flop_time = sum(v for k, v in times_us.items() if k in flop_ops)
    others = sorted(((k, v) for k, v in times_us.items() if k not in flop_ops), key=lambda kv: -kv[1])
    return {"wall_ms": round(wall_s * 1e3, 2), "operators_ms": round(total / 1e3, 2),
            "outside_operators_ms": round(max(wall_s * 1e3 - total / 1e3, 0.0), 2),
            "flop_ops_ms": round(flop_time / 1e3, 2),
            "flop_ops_share": round(flop_time / total, 3) if total else None,
            "flop_ops_gflops_per_s": round(gflop / (flop_time / 1e6), 1) if flop_time else None,
            "top_other_ms": {k: round(v / 1e3, 2) for k, v in others[:4]}}


def profile_breakdown(model: torch.nn.Module, path: Path, options: dict, spec: ExtractorSpec, x: np.ndarray,
                      threads: int, gflop_per_image: float) -> dict:
    """Where one call at batch ``len(x)`` spends its time, per operator, in torch (``torch.profiler``) and in the
    chosen ONNX Runtime session (its own profiler): the share in the matmul/convolution/attention kernels and their
    GFLOP/s, and the largest other operators. Sums of operator times, so a little under the wall time of a call."""
    gflop = gflop_per_image * len(x)
    with torch.inference_mode():
        model(torch.from_numpy(x))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            torch_wall = _timed(lambda: model(torch.from_numpy(x)))
    torch_times: dict[str, float] = {}
    for e in prof.key_averages():
        torch_times[e.key] = torch_times.get(e.key, 0.0) + e.self_cpu_time_total
    code = served_model_code()
    graph = onnx.load(str(path))
    code.keep_outputs(graph, [EMBEDDING_OUTPUT])
    if options["fuse_attention"]:
        code.fuse_attention(graph)
    with tempfile.TemporaryDirectory() as tmp:
        opts = code.session_options(threads, options["allow_spinning"])
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        runner = OrtRunner(session, spec.dim, options["max_batch_pixels"], False)
        runner(x)  # warm-up
        ort_wall = _timed(lambda: runner(x))
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    # the operators of the last call only: its session runs are the last ``chunks`` runs
    chunks = -(-len(x) // code.images_per_call(len(x), *x.shape[-2:], options["max_batch_pixels"]))
    first_ts = runs[-chunks] if len(runs) >= chunks else 0
    ort_times: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_ts:
            op = e["args"]["op_name"]
            ort_times[op] = ort_times.get(op, 0.0) + e["dur"]
    return {"batch": len(x), "torch": _split(torch_times, TORCH_FLOP_OPS, gflop, torch_wall),
            "onnxruntime": _split(ort_times, ORT_FLOP_OPS, gflop, ort_wall)}


def triton_caller(url: str, model: str) -> Callable[[np.ndarray], np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    wanted = [grpcclient.InferRequestedOutput(EMBEDDING_OUTPUT)]

    def call(x: np.ndarray) -> np.ndarray:
        inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], outputs=wanted).as_numpy(EMBEDDING_OUTPUT)

    return call


# -------------------------------------------------------------------------------------------------------------- run


def run(quick: bool = False, models: list[str] | None = None) -> dict:
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
        export_repository(models, repo, target="cpu", parity=False)
        progress.update(task, advance=1, description="starting tritonserver")
        with TritonServer(repo) as triton:
            for name in models:
                results["models"][name] = _measure_model(name, repo, triton.grpc_url, threads, budget, peak,
                                                         progress, task)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["loadavg_1m"]["end"] = round(os.getloadavg()[0], 2)
    _print(results)
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


# ---------------------------------------------------------------------------------------------------------- reports


def _print(results: dict) -> None:
    peak = results["sgemm"]["gflops"]
    for name, m in results["models"].items():
        o = m["onnxruntime_options"]
        table = Table(title=f"{name}: {m['gflops_per_image']:.3f} GFLOP/image, {results['threads']} threads, "
                            f"sgemm peak {peak:.0f} GFLOP/s", caption=f"ONNX Runtime: {o['label']}")
        for col in ("batch", "path", "images/s", "p50 ms/call", "GFLOP/s", "% of peak", "vs torch"):
            table.add_column(col, justify="left" if col == "path" else "right")
        torch_ips = {r["batch"]: r["images_per_s"] for r in m["rows"] if r["method"] == "torch"}
        for r in m["rows"]:
            table.add_row(str(r["batch"]), r["method"], f"{r['images_per_s']:.1f}", f"{r['p50_ms']:.2f}",
                          f"{r['gflops_per_s']:.1f}", f"{100 * r['fraction_of_peak']:.0f}%",
                          f"{r['images_per_s'] / torch_ips[r['batch']]:.2f}x")
        console.print(table)
    for t in targets(results):
        console.print(f"{'[green]met' if t.met else '[red]missed'}[/]: {t.name}: {t.measured} (target {t.target})")
    for name in results["models"]:
        reason = why_not(results, name)
        if reason:
            console.print(f"why: {reason}")


def targets(result: dict) -> list[Target]:
    out = []
    for name, m in result["models"].items():
        b = str(result.get("target_batch", TARGET_BATCH))
        if b not in m["ort_vs_torch"]:
            continue
        rows = {r["method"]: r for r in m["rows"] if str(r["batch"]) == b}
        ratio = m["ort_vs_torch"][b]
        out.append(Target(f"ONNX Runtime vs torch eager, {name}, batch {b} (CPU)", f">= {TARGET_RATIO}x",
                          f"{ratio:.2f}x ({rows['onnxruntime']['images_per_s']:.1f} vs "
                          f"{rows['torch']['images_per_s']:.1f} img/s)", ratio >= TARGET_RATIO))
    return out


def why_not(result: dict, name: str) -> str | None:
    """For a model that misses the ratio target: what it would take, from the measured rows and the profile."""
    m = result["models"][name]
    b = str(result.get("target_batch", TARGET_BATCH))
    if b not in m["ort_vs_torch"] or m["ort_vs_torch"][b] >= TARGET_RATIO or "profile" not in m:
        return None
    peak = result["sgemm"]["gflops"]
    rows = {r["method"]: r for r in m["rows"] if str(r["batch"]) == b}
    t, o = m["profile"]["torch"], m["profile"]["onnxruntime"]
    needed = TARGET_RATIO * rows["torch"]["gflops_per_s"]
    other = o["wall_ms"] - o["flop_ops_ms"]
    return (f"{name} at batch {b}: torch eager already sustains {rows['torch']['gflops_per_s']:.0f} GFLOP/s "
            f"({100 * rows['torch']['gflops_per_s'] / peak:.0f}% of the measured sgemm peak) and spends "
            f"{100 * t['flop_ops_ms'] / t['wall_ms']:.0f}% of a call in matmul/convolution/attention kernels; "
            f"{TARGET_RATIO:g}x would need ONNX Runtime to sustain {needed:.0f} GFLOP/s over the whole call "
            f"({100 * needed / peak:.0f}% of peak). ONNX Runtime's matmul/attention kernels alone run at "
            f"{o['flop_ops_gflops_per_s']} GFLOP/s ({100 * (o['flop_ops_gflops_per_s'] or 0) / peak:.0f}% of peak), "
            f"and its other operators (" + ", ".join(o["top_other_ms"]) + f") take {other:.0f} of its "
            f"{o['wall_ms']:.0f} ms: the model is bound by matmul throughput in both runtimes, so it is "
            f"{m['ort_vs_torch'][b]:.2f}x.")


def markdown(result: dict) -> str:
    peak = result["sgemm"]
    lines = [
        "## Embedding: torch eager vs ONNX Runtime vs Triton (`benchmarks/embedding.py`)",
        "",
        f"{result['threads']} threads everywhere (torch `set_num_threads`, ONNX Runtime intra-op threads, the "
        "Triton model's session). Same input for all three paths: uint8 pixels of real images (Fashion-MNIST at 28 "
        "px, photos at 224 px), unit-norm embedding out. torch is the registry's embedding model in eager mode "
        "(`inference_mode`); ONNX Runtime runs the graph exported for Triton in a session built by the served "
        "model's code (`export/onnx_cpu.py`), with the options chosen below; Triton is the real "
        "`tritonserver` (python backend running that same session code), one gRPC request per batch. "
        "The three paths are timed in interleaved rounds (one call each per round, "
        f"at least {result['budget']['batch_s']:g} s and {result['budget']['min_rounds']} rounds per batch size); "
        "images/s is from the fastest call of each path (the least disturbed on this shared machine), p50 from "
        "the median call."
        + (f" The Triton model runs with `model.py`'s defaults: {_label(result['triton_session_options'])}."
           if "triton_session_options" in result else "")
        + (f" 1-minute load average {result['loadavg_1m']['start']} at the start, {result['loadavg_1m']['end']} at "
           "the end (other jobs share this machine)." if "loadavg_1m" in result else ""),
        "",
        f"FLOPs: {result['flop_convention']}. Peak: {peak['library']}, "
        + ", ".join(f"{n}x{n}: {g:.0f} GFLOP/s" for n, g in peak["per_size"].items())
        + f" (best of {peak['repeats']}); **{peak['gflops']:.0f} GFLOP/s** is the reference for % of peak.",
        "",
        "| model | GFLOP/image | batch | path | images/s | p50 ms/call | GFLOP/s | % of peak | vs torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["models"].items():
        torch_ips = {r["batch"]: r["images_per_s"] for r in m["rows"] if r["method"] == "torch"}
        for r in m["rows"]:
            lines.append(f"| {name} ({m['input_size']}px) | {m['gflops_per_image']:.3f} | {r['batch']} | "
                         f"{r['method']} | {r['images_per_s']:.1f} | {r['p50_ms']:.2f} | {r['gflops_per_s']:.1f} | "
                         f"{100 * r['fraction_of_peak']:.0f}% | {r['images_per_s'] / torch_ips[r['batch']]:.2f}x |")
    lines += ["", "ONNX Runtime options, chosen per model one at a time, each by measuring the candidates against the "
              f"best so far at batch {result.get('target_batch', TARGET_BATCH)} (all: `ORT_ENABLE_ALL`, sequential "
              f"execution, {result['threads']} intra-op threads, embedding output only):", "",
              "| model | chosen | measured (images/s at the target batch) | session build: model.onnx / cached "
              "optimised model | parity vs torch (min cosine, max abs diff) |",
              "|---|---|---|---|---|"]
    for name, m in result["models"].items():
        o = m["onnxruntime_options"]
        stages = "<br>".join(f"{st['option']}: " + "; ".join(f"{c['options'].split(', ')[_OPTION_INDEX[st['option']]]} "
                                                             f"{c['images_per_s']:.1f}" for c in st["candidates"])
                             for st in o["stages"])
        par = "; ".join(f"{k} {v['min_cosine']:.6f}, {v['max_abs_diff']:.1e}" for k, v in m["parity"].items())
        lines.append(f"| {name} | {o['label']} | {stages} | {o['session_create_s']['from_onnx']:.2f} s / "
                     f"{o['session_create_s']['from_cached_optimized']:.2f} s | {par} |")
    lines += ["", f"Where one call at batch {result.get('target_batch', TARGET_BATCH)} spends its time (sums of "
              "operator times from `torch.profiler` and ONNX Runtime's profiler, one profiled call each, profilers "
              "on; \"FLOP kernels\" = matmul, convolution and attention operators, which carry all the counted "
              "FLOPs; outside operators = wall time of the call minus the operators: Python, dispatch, the "
              "session's own overhead):", "",
              "| model | path | wall ms | outside operators | in FLOP kernels | their GFLOP/s | largest other "
              "operators (ms) |", "|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        for path in ("torch", "onnxruntime"):
            p = m["profile"][path]
            others = ", ".join(f"{k.removeprefix('aten::')} {v:.1f}" for k, v in p["top_other_ms"].items())
            lines.append(f"| {name} | {path} | {p['wall_ms']:.1f} | {p['outside_operators_ms']:.1f} ms | "
                         f"{p['flop_ops_ms']:.1f} ms ({100 * p['flop_ops_ms'] / p['wall_ms']:.0f}%) | "
                         f"{p['flop_ops_gflops_per_s']} | {others} |")
    verdicts = targets(result)
    if verdicts:
        lines += ["", "Targets:", ""]
        lines += [f"- {t.name}: {t.target}, measured {t.measured}: **{'met' if t.met else 'missed'}**"
                  for t in verdicts]
    reasons = [r for r in (why_not(result, name) for name in result["models"]) if r]
    if reasons:
        lines += ["", "Why a target is missed:", "", *[f"- {r}" for r in reasons]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the Fashion-MNIST ViT, short timings (smoke run)")
    p.add_argument("--models", nargs="+", help=f"default: {', '.join(MODELS)}")
    a = p.parse_args()
    run(a.quick, a.models)
