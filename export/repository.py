"""Builds a Triton model repository: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/1/model.onnx``
(+ ``model.py`` and the CPU graphs of ``export/onnx_cpu.py`` for the cpu target, ``model.plan`` for tensorrt)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.onnx_cpu import write_served_graphs
from export.onnx_export import export_onnx
from export.parity import ParityResult, check_contributions_parity, check_parity, onnx_session
from export.triton_config import TritonModelConfig, parse_config, render_config
from extractors.registry import committed_calibration, get_spec
from extractors.served_files import CALIBRATION_FILE, MODEL_INFO_FILE
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME

MODEL_PY = Path(__file__).parent / "templates" / "model.py"


@dataclass
class ExportResult:
    model: str
    path: Path
    parity: list[ParityResult] = field(default_factory=list)
    # The largest difference of a region's share of a score, ONNX Runtime vs torch (None: no such output).
    contributions_parity: float | None = None


def onnx_output_dims(path: Path, input_size: int) -> dict[str, list[int]]:
    """Per-output dims without the batch axis, measured by running the graph once (the exporter leaves
    some output shapes symbolic)."""
    session = onnx_session(path, threads=1)
    x = np.zeros((1, 3, input_size, input_size), dtype=np.uint8)
    names = [o.name for o in session.get_outputs()]
    return {n: list(out.shape[1:]) for n, out in zip(names, session.run(names, {INPUT_NAME: x}), strict=True)}


def export_model(name: str, repo: Path, target: str, config: TritonModelConfig, weights_path: Path | None = None,
                 parity: bool = True) -> ExportResult:
    spec = get_spec(name)
    model_dir = Path(repo) / name
    version_dir = model_dir / "1"
    onnx_path = export_onnx(name, version_dir / "model.onnx", config.onnx_opset, weights_path)
    result = ExportResult(name, model_dir)
    if parity:
        result.parity = check_parity(name, onnx_path, weights_path=weights_path)
        result.contributions_parity = check_contributions_parity(name, onnx_path, weights_path=weights_path)
    if target == "cpu":
        shutil.copyfile(MODEL_PY, version_dir / "model.py")
        for graph in write_served_graphs(onnx_path, EMBEDDING_OUTPUT):
            if parity:  # the rewritten graphs must still compute the same embedding
                result.parity += check_parity(name, graph, weights_path=weights_path)
    if target == "tensorrt":
        from export.tensorrt import build_plan

        build_plan(onnx_path, version_dir / "model.plan", config.max_batch_size, spec.input_size)
    text = render_config(name, spec.input_size, onnx_output_dims(onnx_path, spec.input_size), target, config)
    parse_config(text)  # never write a config Triton would reject
    (model_dir / "config.pbtxt").write_text(text)
    place_calibration(name, model_dir)
    place_model_info(name, model_dir)
    return result


def model_info(name: str) -> dict:
    """What the gateway tells users about a served model (``MODEL_INFO_FILE``): from the registry or its card."""
    spec = get_spec(name)
    return {"description": spec.description, "trained_on": spec.trained_on, "domain": spec.domain,
            "labels_used": spec.labels_used, "input_size": spec.input_size}


def place_model_info(name: str, model_dir: Path) -> None:
    (Path(model_dir) / MODEL_INFO_FILE).write_text(json.dumps(model_info(name), indent=1) + "\n")


def place_calibration(name: str, model_dir: Path) -> None:
    """The gateway reads a model's verdict thresholds beside it (``weights/<model>/calibration.json``, fitted by
    ``vsearch calibrate``); a stale copy must not outlive a removed one."""
    calibration = committed_calibration(name)
    if calibration.exists():
        shutil.copyfile(calibration, model_dir / CALIBRATION_FILE)
    else:
        (model_dir / CALIBRATION_FILE).unlink(missing_ok=True)


def export_repository(names: list[str], repo: Path, target: str, config: TritonModelConfig,
                      parity: bool = True) -> list[ExportResult]:
    return [export_model(n, repo, target, config, parity=parity) for n in names]
