"""Writes Triton ``config.pbtxt`` files for an exported extractor.

- ``cpu``: ``backend: "python"`` + ``1/model.py`` running ONNX Runtime (what the PyPI ``tritonserver`` runs).
- ``gpu``: ``backend: "onnxruntime"`` on ``KIND_GPU`` with the TensorRT execution accelerator in FP16
  (LayerNorm kept in FP32: its variance overflows FP16 on real activations), an engine cache and warm-up.
- ``tensorrt``: a ``model.plan`` built from the ONNX file, ``backend: "tensorrt"``.
Dynamic batching and instance counts come from a ``TritonModelConfig`` that the caller builds from its settings
(``launchers.exporting.triton_model_config``): export reads no settings of its own."""

from __future__ import annotations

from dataclasses import dataclass

from extractors.tensor_names import INPUT_NAME

TARGETS = ("cpu", "gpu", "tensorrt")


@dataclass(frozen=True)
class TritonModelConfig:
    """The serving choices written into ``config.pbtxt`` (and the ONNX opset), beside the model itself."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instance_count: int
    onnx_opset: int


def _dims(d: list[int]) -> str:
    return "[ " + ", ".join(str(x) for x in d) + " ]"


def render_config(model: str, input_size: int, outputs: dict[str, list[int]], target: str,
                  config: TritonModelConfig) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}: use one of {TARGETS}")
    backend = {"cpu": "python", "gpu": "onnxruntime", "tensorrt": "tensorrt"}[target]
    kind = "KIND_CPU" if target == "cpu" else "KIND_GPU"
    input_dims = [3, input_size, input_size]
    preferred = [b for b in config.preferred_batch_sizes if b <= config.max_batch_size]
    lines = [
        f'name: "{model}"',
        f'backend: "{backend}"',
        f"max_batch_size: {config.max_batch_size}",
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_UINT8 dims: {_dims(input_dims)} }} ]',
        "output [",
        ",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: {_dims(d)} }}' for n, d in outputs.items()),
        "]",
        f"instance_group [ {{ count: {config.instance_count} kind: {kind} }} ]",
        "dynamic_batching {",
        f"  preferred_batch_size: {_dims(preferred)}" if preferred else "",
        f"  max_queue_delay_microseconds: {config.max_queue_delay_us}",
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
        warm = min(8, config.max_batch_size)
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
