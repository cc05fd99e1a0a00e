"""The embedding benchmark's BENCHMARKS.md section, targets and why a target is missed, from the result."""

from __future__ import annotations

from benchmarks.common import Target, loadavg_sentence, section, target_bullets
from benchmarks.embedding.benchmark import TARGET_RATIO
from benchmarks.embedding.onnxruntime_options import OPTION_INDEX, option_label
from evaluation.document import Doc


def targets(result: dict) -> list[Target]:
    out = []
    b = str(result["target_batch"])
    for name, m in result["models"].items():
        rows = {r["method"]: r for r in m["rows"] if str(r["batch"]) == b}
        ratio = m["ort_vs_torch"][b]
        out.append(Target(f"ONNX Runtime vs torch eager, {name}, batch {b} (CPU)", f">= {TARGET_RATIO}x",
                          f"{ratio:.2f}x ({rows['onnxruntime']['images_per_s']:.1f} vs "
                          f"{rows['torch']['images_per_s']:.1f} img/s)", ratio >= TARGET_RATIO))
    return out


def why_not(result: dict, name: str) -> str | None:
    """For a model that misses the ratio target: what it would take, from the measured rows and the profile."""
    m = result["models"][name]
    b = str(result["target_batch"])
    if m["ort_vs_torch"][b] >= TARGET_RATIO:
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


def _throughput(doc: Doc, result: dict) -> None:
    peak = result["sgemm"]
    doc.p(f"{result['threads']} threads everywhere (torch `set_num_threads`, ONNX Runtime intra-op threads, the "
          "Triton model's session). Same input for all three paths: uint8 pixels of real images (Fashion-MNIST at 28 "
          "px, photos at 224 px), unit-norm embedding out. torch is the registry's embedding model in eager mode "
          "(`inference_mode`); ONNX Runtime runs the graph exported for Triton in a session built by the served "
          "model's code (`export/onnx_cpu.py`), with the options chosen below; Triton is the real "
          "`tritonserver` (python backend running that same session code), one gRPC request per batch. "
          "The three paths are timed in interleaved rounds (one call each per round, "
          f"at least {result['budget']['batch_s']:g} s and {result['budget']['min_rounds']} rounds per batch size); "
          "images/s is from the fastest call of each path (the least disturbed on this shared machine), p50 from "
          "the median call."
          f" The Triton model runs with `model.py`'s defaults: {option_label(result['triton_session_options'])}."
          + loadavg_sentence(result))
    doc.p(f"FLOPs: {result['flop_convention']}. Peak: {peak['library']}, "
          + ", ".join(f"{n}x{n}: {g:.0f} GFLOP/s" for n, g in peak["per_size"].items())
          + f" (best of {peak['repeats']}); **{peak['gflops']:.0f} GFLOP/s** is the reference for % of peak.")
    rows = []
    for name, m in result["models"].items():
        torch_ips = {r["batch"]: r["images_per_s"] for r in m["rows"] if r["method"] == "torch"}
        rows += [[f"{name} ({m['input_size']}px)", f"{m['gflops_per_image']:.3f}", str(r["batch"]), r["method"],
                  f"{r['images_per_s']:.1f}", f"{r['p50_ms']:.2f}", f"{r['gflops_per_s']:.1f}",
                  f"{100 * r['fraction_of_peak']:.0f}%", f"{r['images_per_s'] / torch_ips[r['batch']]:.2f}x"]
                 for r in m["rows"]]
    doc.table(["model", "GFLOP/image", "batch", "path", "images/s", "p50 ms/call", "GFLOP/s", "% of peak",
               "vs torch"], rows)


def _options(doc: Doc, result: dict) -> None:
    doc.p("ONNX Runtime options, chosen per model one at a time, each by measuring the candidates against the "
          f"best so far at batch {result['target_batch']} (all: `ORT_ENABLE_ALL`, sequential "
          f"execution, {result['threads']} intra-op threads, embedding output only):")
    rows = []
    for name, m in result["models"].items():
        o = m["onnxruntime_options"]
        stages = "<br>".join(f"{st['option']}: " + "; ".join(f"{c['options'].split(', ')[OPTION_INDEX[st['option']]]} "
                                                             f"{c['images_per_s']:.1f}" for c in st["candidates"])
                             for st in o["stages"])
        par = "; ".join(f"{k} {v['min_cosine']:.6f}, {v['max_abs_diff']:.1e}" for k, v in m["parity"].items())
        rows.append([name, o["label"], stages, f"{o['session_create_s']['from_onnx']:.2f} s / "
                     f"{o['session_create_s']['from_cached_optimized']:.2f} s", par])
    doc.table(["model", "chosen", "measured (images/s at the target batch)",
               "session build: model.onnx / cached optimised model", "parity vs torch (min cosine, max abs diff)"],
              rows)


def _profiles(doc: Doc, result: dict) -> None:
    doc.p(f"Where one call at batch {result['target_batch']} spends its time (sums of "
          "operator times from `torch.profiler` and ONNX Runtime's profiler, one profiled call each, profilers "
          "on; \"FLOP kernels\" = matmul, convolution and attention operators, which carry all the counted "
          "FLOPs; outside operators = wall time of the call minus the operators: Python, dispatch, the "
          "session's own overhead):")
    rows = []
    for name, m in result["models"].items():
        for path in ("torch", "onnxruntime"):
            p = m["profile"][path]
            others = ", ".join(f"{k.removeprefix('aten::')} {v:.1f}" for k, v in p["top_other_ms"].items())
            rows.append([name, path, f"{p['wall_ms']:.1f}", f"{p['outside_operators_ms']:.1f} ms",
                         f"{p['flop_ops_ms']:.1f} ms ({100 * p['flop_ops_ms'] / p['wall_ms']:.0f}%)",
                         str(p["flop_ops_gflops_per_s"]), others])
    doc.table(["model", "path", "wall ms", "outside operators", "in FLOP kernels", "their GFLOP/s",
               "largest other operators (ms)"], rows)


def _verdicts(doc: Doc, result: dict) -> None:
    target_bullets(doc, targets(result))
    reasons = [r for r in (why_not(result, name) for name in result["models"]) if r]
    if reasons:
        doc.p("Why a target is missed:")
        doc.bullets(reasons)


def markdown(result: dict) -> str:
    return section("Embedding: torch eager vs ONNX Runtime vs Triton (`benchmarks/embedding/`)", result,
                   _throughput, _options, _profiles, _verdicts)
