"""Exports the served models before a stack starts: export's serving choices come from the one ``Settings``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from export.repository import ExportResult, export_model, place_calibration, place_model_info
from export.triton_config import TritonModelConfig
from extractors.contributions import served_outputs
from extractors.registry import get_spec
from server.settings import Settings

console = Console()


def triton_model_config(settings: Settings) -> TritonModelConfig:
    return TritonModelConfig(max_batch_size=settings.triton_max_batch_size,
                             preferred_batch_sizes=tuple(settings.triton_preferred_batch_sizes),
                             max_queue_delay_us=settings.triton_max_queue_delay_us,
                             instance_count=settings.triton_instance_count, onnx_opset=settings.onnx_opset)


def export_served(name: str, repo: Path, target: str, settings: Settings, parity: bool = True) -> ExportResult:
    return export_model(name, repo, target, triton_model_config(settings), parity=parity)


def ensure_exported(settings: Settings) -> None:
    """Exports every served model whose ``model.onnx`` is missing or older than its weights or its whitening
    (committed; ONNX is built), or that lacks an output the served graph has now (an export from before
    ``patch_contributions``), so a retrained checkpoint is never served from a stale graph."""
    for name in settings.models:
        onnx_path = settings.model_repository / name / "1" / "model.onnx"
        spec = get_spec(name)
        inputs = [p for p in (spec.weights(), spec.whitening() if spec.whitening else None) if p is not None]
        stale = onnx_path.exists() and (
            any(p.exists() and p.stat().st_mtime > onnx_path.stat().st_mtime for p in inputs)
            or lacks_outputs(onnx_path, served_outputs(name)))
        if not onnx_path.exists() or stale:
            console.print(f"exporting [cyan]{name}[/] to {settings.model_repository}")
            export_served(name, settings.model_repository, "cpu", settings)
        else:  # a recalibration needs no new graph: only its files beside the model
            place_calibration(name, settings.model_repository / name)
            place_model_info(name, settings.model_repository / name)


def lacks_outputs(onnx_path: Path, outputs: list[str]) -> bool:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False)
    return not set(outputs) <= {o.name for o in graph.graph.output}
