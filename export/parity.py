"""ONNX Runtime vs torch on real images: the exported graph must compute the same embedding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from extractors.contributions import has_contributions, load_served_graph
from extractors.datasets import load_fashion_mnist, load_photos
from extractors.imaging import array_to_model_input
from extractors.registry import get_spec, load_extractor
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME, PATCH_CONTRIBUTIONS_OUTPUT

MIN_COSINE = 0.99999
MAX_ABS_DIFF = 1e-4


class ParityError(AssertionError):
    pass


@dataclass
class ParityResult:
    batch: int
    min_cosine: float
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.max_abs_diff <= MAX_ABS_DIFF


def real_images(size: int, n: int = 8) -> np.ndarray:
    """``n`` real images for the model's input size, resized as the gateway does: Fashion-MNIST for 28 px models,
    photos otherwise."""
    if size <= 32:
        images = load_fashion_mnist("test").subset(range(n)).images
    else:
        photos = load_photos()
        images = [photos.images[i % len(photos)] for i in range(n)]
    return np.stack([array_to_model_input(im, size) for im in images])


def onnx_session(path: Path, threads: int = 2) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(np.abs(a - b).max())


def check_parity(name: str, onnx_path: Path, batches=(1, 8), weights_path: Path | None = None) -> list[ParityResult]:
    spec = get_spec(name)
    model = load_extractor(name, weights_path)
    session = onnx_session(onnx_path)
    images = real_images(spec.input_size, max(batches))
    results = []
    for b in batches:
        x = images[:b]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run([EMBEDDING_OUTPUT], {INPUT_NAME: x})[0]
        results.append(ParityResult(b, *compare(ref, got)))
    bad = [r for r in results if not r.ok]
    if bad:
        raise ParityError(f"{name}: ONNX Runtime differs from torch: {bad} "
                          f"(need cosine >= {MIN_COSINE}, max abs diff <= {MAX_ABS_DIFF})")
    return results


def check_contributions_parity(name: str, onnx_path: Path, batch: int = 4,
                               weights_path: Path | None = None) -> float | None:
    """The largest difference between ONNX Runtime's and torch's ``patch_contributions`` on real images, in units of
    the score they split (each region's share of a cosine with a unit vector is at most its norm); None when the
    model has no such output. ParityError above ``MAX_ABS_DIFF``."""
    if not has_contributions(name):
        return None
    spec = get_spec(name)
    images = real_images(spec.input_size, batch)
    with torch.no_grad():
        ref = load_served_graph(name, weights_path)(torch.from_numpy(images))[-1].numpy()
    got = onnx_session(onnx_path).run([PATCH_CONTRIBUTIONS_OUTPUT], {INPUT_NAME: images})[0]
    # What a heatmap is made of: each region's share of the score with the other images' embeddings.
    vectors = np.roll(ref.sum(1), 1, axis=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    diff = float(np.abs(np.einsum("brd,bd->br", ref - got, vectors)).max())
    if not diff <= MAX_ABS_DIFF:
        raise ParityError(f"{name}: ONNX Runtime's {PATCH_CONTRIBUTIONS_OUTPUT} differ from torch's by {diff} "
                          f"(> {MAX_ABS_DIFF}) in a region's share of a score")
    return diff
