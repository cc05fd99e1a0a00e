"""Exports a registered extractor to ONNX: uint8 pixels [B, 3, S, S] in, unit-norm float32 embedding out, and
the outputs explanations read (``extractors.contributions.served_outputs``: a ViT's last-block CLS
self-attention, each region's share of the embedding). ``explain=False`` writes the bare embedding graph instead
(what the benchmark compares the served graph's embedding-only path against)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from extractors.contributions import load_served_graph, served_outputs
from extractors.registry import get_spec, load_extractor
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME


def export_onnx(name: str, path: Path, opset: int = 17, weights_path: Path | None = None,
                explain: bool = True) -> Path:
    spec = get_spec(name)
    model = load_served_graph(name, weights_path) if explain else load_extractor(name, weights_path)
    example = torch.randint(0, 256, (2, 3, spec.input_size, spec.input_size), dtype=torch.uint8)
    outputs = served_outputs(name) if explain else [EMBEDDING_OUTPUT]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        # The TorchScript-based exporter: it needs no onnxscript and gives a plain, checker-clean graph.
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=outputs, dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *outputs]},
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    graph.doc_string = f"visual-search extractor {name}: {spec.description}"
    graph.metadata_props.add(key="extractor", value=name)
    graph.metadata_props.add(key="dim", value=str(spec.dim))
    onnx.save(graph, str(path))
    return path
