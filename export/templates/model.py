"""Triton python-backend model: runs this version folder's ONNX graphs with ONNX Runtime on CPU.

The ``cpu`` export target. ``export/onnx_cpu.py`` wrote the graphs: ``embedding.cpu.onnx`` (the embedding alone,
what searches ask for) and ``model.cpu.onnx`` (every output: also what explanations ask for), both with fused
attention. Production GPUs use the
same repository's ``model.onnx`` with the ``onnxruntime`` backend instead.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# A dynamic batch bigger than this many input pixels (eight 224x224 images) runs as several session calls: each
# call's activations then stay in the CPU caches (ViT-S/16 and EfficientNet-Lite0 at 224 px run faster in chunks of
# 8 than as one batch of 32; 28-px models are never split). 0 = one call per batch.
DEFAULT_MAX_BATCH_PIXELS = 8 * 224 * 224


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's threads spin-wait after each operator by default: on a box shared with Triton, the gateway and Milvus
        # that costs the others their cycles (Triton's CPU per query 6.9 ms -> 2.5 ms without, BENCHMARKS.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.max_batch_pixels = int(params.get("max_batch_pixels", str(DEFAULT_MAX_BATCH_PIXELS)))
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]
        folder = os.path.join(args["model_repository"], args["model_version"])

        def session(name):
            path = os.path.join(folder, name)
            path = path if os.path.exists(path) else os.path.join(folder, "model.onnx")
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        self.sessions = {tuple(self.output_names): session("model.cpu.onnx"),
                         tuple(self.output_names[:1]): session("embedding.cpu.onnx")}

    def run(self, names, batch):
        """One session call, or several of at most ``max_batch_pixels`` input pixels each."""
        session = self.sessions.get(tuple(names)) or self.sessions[tuple(self.output_names)]
        step = len(batch)
        if self.max_batch_pixels > 0:
            step = max(1, min(step, self.max_batch_pixels // (batch.shape[-2] * batch.shape[-1])))
        parts = [session.run(names, {self.input_name: batch[i:i + step]}) for i in range(0, len(batch), step)]
        return parts[0] if len(parts) == 1 else [np.concatenate(p) for p in zip(*parts, strict=True)]

    def execute(self, requests):
        # The whole dynamic batch at once: concatenate, run, split back per request.
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        wanted = set()
        for r in requests:
            wanted.update(r.requested_output_names() or self.output_names)
        names = [n for n in self.output_names if n in wanted]  # skip attention unless someone asked
        try:
            outputs = self.run(names, arrays[0] if len(arrays) == 1 else np.concatenate(arrays))
        except Exception as e:  # a bad batch fails its requests, never the model
            error = pb_utils.TritonError(f"onnxruntime failed: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for a in arrays:
            end = start + len(a)
            pairs = zip(names, outputs, strict=True)
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(o[start:end])) for n, o in pairs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
