"""Where one call spends its time, per operator, in torch and in the chosen ONNX Runtime session: the share in the
matmul / convolution / attention kernels (which carry all the counted FLOPs), their GFLOP/s, the largest others."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.embedding.onnxruntime_options import OrtRunner, served_graph
from benchmarks.embedding.timing import timed
from export import onnx_cpu as code
from extractors.registry import ExtractorSpec

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
    """Per-operator time of one call at batch ``len(x)`` in torch (``torch.profiler``) and in the chosen ONNX Runtime
    session (its own profiler): sums of operator times, so a little under the wall time of a call."""
    gflop = gflop_per_image * len(x)
    with torch.inference_mode():
        model(torch.from_numpy(x))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            torch_wall = timed(lambda: model(torch.from_numpy(x)))
    torch_times: dict[str, float] = {}
    for e in prof.key_averages():
        torch_times[e.key] = torch_times.get(e.key, 0.0) + e.self_cpu_time_total
    with tempfile.TemporaryDirectory() as tmp:
        opts = code.session_options(threads, options["allow_spinning"])
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(served_graph(path, options), opts, providers=["CPUExecutionProvider"])
        runner = OrtRunner(session, spec.dim, options["max_batch_pixels"], False)
        runner(x)  # warm-up
        ort_wall = timed(lambda: runner(x))
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

