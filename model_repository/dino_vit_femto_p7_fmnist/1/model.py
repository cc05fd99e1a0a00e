"""Triton python-backend model: runs this version folder's ``model.onnx`` with ONNX Runtime on CPU.

The ``cpu`` export target. Production GPUs use the same repository with the ``onnxruntime`` backend instead.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        # One session call for the whole dynamic batch: concatenate, run once, split back per request.
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        wanted = set()
        for r in requests:
            wanted.update(r.requested_output_names() or self.output_names)
        names = [n for n in self.output_names if n in wanted]  # skip attention unless someone asked
        try:
            outputs = self.session.run(names, {self.input_name: np.concatenate(arrays)})
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
