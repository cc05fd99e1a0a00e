"""ONNX Runtime run the served way (``OrtRunner``), its session options chosen by measurement at the target batch
(``tune_onnxruntime``), and what building a session costs (``session_creation``)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.embedding.timing import interleaved
from export import onnx_cpu as code
from extractors.registry import ExtractorSpec
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME


class OrtRunner:
    """One session run one way: the served model's ``run_in_chunks`` (calls of at most ``max_batch_pixels`` input
    pixels; 0 = the whole batch), or the same chunks through IO binding, bound once per input array."""

    def __init__(self, session: ort.InferenceSession, dim: int, max_batch_pixels: int, io_binding: bool) -> None:
        self.session, self.dim, self.max_batch_pixels, self.io_binding = session, dim, max_batch_pixels, io_binding
        self._bound: dict[int, tuple[np.ndarray, np.ndarray, list[ort.IOBinding]]] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
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


def option_label(o: dict) -> str:
    chunk = "whole batch per call" if not o["max_batch_pixels"] else \
        f"calls of <= {o['max_batch_pixels'] // (224 * 224)}x224x224 px"
    return ", ".join(["fused attention" if o["fuse_attention"] else "plain graph",
                      "spinning" if o["allow_spinning"] else "no spinning", chunk,
                      "IO binding" if o["io_binding"] else "session.run"])


OPTION_INDEX = {"fuse_attention": 0, "allow_spinning": 1, "max_batch_pixels": 2, "io_binding": 3}


def tune_onnxruntime(path: Path, spec: ExtractorSpec, x: np.ndarray, threads: int, budget_s: float,
                     min_rounds: int) -> tuple[OrtRunner, dict]:
    """Chooses the session options one at a time, each measured at the target batch ``x`` against the best so far: the
    graph (attention fused or not, ViTs only), thread spinning, the largest batch per call, then IO binding."""
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
        options = {option_label({**best, option: v}): {**best, option: v} for v in values}
        runners = {k: runner(o) for k, o in options.items()}
        t = interleaved({k: (lambda r=r: r(x)) for k, r in runners.items()}, budget_s / len(stages), min_rounds,
                        warmup=False)
        winner = min(t, key=lambda k: t[k]["best_s"])
        measured.append({"option": option, "chosen": options[winner][option], "candidates": [
            {"options": k, "images_per_s": round(len(x) / v["best_s"], 2), "calls": v["calls"]} for k, v in t.items()]})
        best = options[winner]
    info = {"chosen": best, "label": option_label(best), "threads": threads, "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_ALL", "selected_at_batch": len(x), "stages": measured,
            "images_per_call_at_target": code.images_per_call(len(x), *x.shape[-2:], best["max_batch_pixels"]),
            "pixels_per_image": pixels, "session_create_s": session_creation(path, best, threads)}
    return runner(best), info


def served_graph(path: Path, options: dict) -> bytes:
    """The graph the served model runs: embedding output only, attention fused when ``options`` say so."""
    graph = onnx.load(str(path))
    code.keep_outputs(graph, [EMBEDDING_OUTPUT])
    if options["fuse_attention"]:
        code.fuse_attention(graph)
    return graph.SerializeToString()


def session_creation(path: Path, options: dict, threads: int) -> dict:
    """Seconds to build the chosen session from ``model.onnx`` (load, cut, fuse, optimise) vs from an optimised model
    ONNX Runtime saved to disk on the first build (loaded with optimisations off: they are already in it)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        code.build_session(str(path), threads, options["allow_spinning"], options["fuse_attention"],
                           outputs=[EMBEDDING_OUTPUT])
        from_onnx = time.perf_counter() - t0
        opts = code.session_options(threads, options["allow_spinning"])
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # not the warning that the saved model is for this machine only: it is
        ort.InferenceSession(served_graph(path, options), opts, providers=["CPUExecutionProvider"])
        opts = code.session_options(threads, options["allow_spinning"])
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        t0 = time.perf_counter()
        ort.InferenceSession(str(Path(tmp) / "optimized.onnx"), opts, providers=["CPUExecutionProvider"])
        from_cache = time.perf_counter() - t0
    return {"from_onnx": round(from_onnx, 3), "from_cached_optimized": round(from_cache, 3)}

