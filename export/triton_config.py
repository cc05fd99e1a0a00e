"""Writes Triton ``config.pbtxt`` files for an exported extractor.

- ``cpu``: ``backend: "python"`` + ``1/model.py`` running ONNX Runtime (what the PyPI ``tritonserver`` runs).
- ``gpu``: ``backend: "onnxruntime"`` on ``KIND_GPU`` with the TensorRT execution accelerator in FP16
  (LayerNorm kept in FP32: its variance overflows FP16 on real activations), an engine cache and warm-up.
- ``tensorrt``: a ``model.plan`` built from the ONNX file, ``backend: "tensorrt"``.
Dynamic batching and instance counts come from ``Settings``."""

from __future__ import annotations

from extractors.tensor_names import INPUT_NAME
from server.settings import Settings

TARGETS = ("cpu", "gpu", "tensorrt")


def _dims(d: list[int]) -> str:
    return "[ " + ", ".join(str(x) for x in d) + " ]"


def render_config(model: str, input_size: int, outputs: dict[str, list[int]], target: str,
                  settings: Settings) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}: use one of {TARGETS}")
    backend = {"cpu": "python", "gpu": "onnxruntime", "tensorrt": "tensorrt"}[target]
    kind = "KIND_CPU" if target == "cpu" else "KIND_GPU"
    input_dims = [3, input_size, input_size]
    preferred = [b for b in settings.triton_preferred_batch_sizes if b <= settings.triton_max_batch_size]
    lines = [
        f'name: "{model}"',
        f'backend: "{backend}"',
        f"max_batch_size: {settings.triton_max_batch_size}",
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: {_dims(input_dims)} }} ]',
        "output [",
        ",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: {_dims(d)} }}' for n, d in outputs.items()),
        "]",
        f"instance_group [ {{ count: {settings.triton_instance_count} kind: {kind} }} ]",
        "dynamic_batching {",
        f"  preferred_batch_size: {_dims(preferred)}" if preferred else "",
        f"  max_queue_delay_microseconds: {settings.triton_max_queue_delay_us}",
        "}",
    ]
    if target == "cpu":
        # Threads per model instance: the ONNX Runtime session inside model.py reads this.
        lines.append('parameters { key: "intra_op_threads" value: { string_value: "0" } }')
    if target == "gpu":
        lines += [
            "optimization { execution_accelerators { gpu_execution_accelerator: [ {",
            '  name: "tensorrt"',
            '  parameters { key: "precision_mode" value: "FP16" }',
            '  parameters { key: "max_workspace_size_bytes" value: "2147483648" }',
            '  parameters { key: "trt_engine_cache_enable" value: "1" }',
            f'  parameters {{ key: "trt_engine_cache_path" value: "/models/{model}/trt_cache" }}',
            '  parameters { key: "trt_layer_norm_fp32_fallback" value: "1" }',
            "} ] } }",
        ]
    if target in ("gpu", "tensorrt"):
        warm = min(8, settings.triton_max_batch_size)
        lines += [
            f'model_warmup [ {{ name: "warmup_batch_{warm}" batch_size: {warm} inputs {{ key: "{INPUT_NAME}" value: {{',
            f"  data_type: TYPE_UINT8 dims: {_dims(input_dims)} zero_data: true }} }} }} ]",
        ]
    return "\n".join(line for line in lines if line) + "\n"


def parse_config(text: str):
    """Parses with Triton's own ``ModelConfig`` protobuf (shipped in tritonclient): the proof it is valid."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())
