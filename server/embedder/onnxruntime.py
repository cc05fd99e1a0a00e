"""Embeddings from ONNX Runtime in the gateway's own process: the runtime for a small deployment with no Triton
(``vsearch serve --runtime onnxruntime``), reading the same model repository Triton would serve (``<model>/1/``: the
graphs export wrote, ``embedding.cpu.onnx`` for searches and ``model.cpu.onnx`` with every output, else
``model.onnx``). Inference runs in one worker thread (ONNX Runtime parallelises inside a call), so the event loop
never waits on it; the gateway's own micro-batching still forms the batches."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME, PATCH_CONTRIBUTIONS_OUTPUT
from server.embedder.base import EmbedderError, ModelDescription

VERSION = "1"


class OnnxRuntimeEmbedder:
    def __init__(self, repository: Path, models: list[str] | None = None, threads: int = 0) -> None:
        self.repository = Path(repository)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # As in the Triton python backend: threads that spin after each operator take the cores from the rest
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions: dict[str, dict[bool, ort.InferenceSession]] = {}
        self._descriptions: dict[str, ModelDescription] = {}
        names = models or sorted(p.parent.parent.name for p in self.repository.glob(f"*/{VERSION}/model.onnx"))
        for name in names:
            folder = self.repository / name / VERSION
            if not (folder / "model.onnx").exists():
                raise FileNotFoundError(f"{folder / 'model.onnx'} is missing: export {name} first "
                                        "(`vsearch export --model {name}`)")
            full = ort.InferenceSession(str(_first(folder, "model.cpu.onnx", "model.onnx")), opts,
                                        providers=["CPUExecutionProvider"])
            plain = ort.InferenceSession(str(_first(folder, "embedding.cpu.onnx", "model.onnx")), opts,
                                         providers=["CPUExecutionProvider"])
            self._sessions[name] = {False: plain, True: full}
            self._descriptions[name] = _describe(name, full)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")

    async def _run(self, model: str, pixels: np.ndarray, contributions: bool) -> list[np.ndarray]:
        if model not in self._sessions:
            raise EmbedderError(f"unknown model {model!r}: {', '.join(sorted(self._sessions)) or 'none'} loaded")
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise EmbedderError(f"pixels must be uint8 [B, 3, S, S], got {pixels.dtype} {pixels.shape}")
        names = [EMBEDDING_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT] if contributions else [EMBEDDING_OUTPUT]
        session = self._sessions[model][contributions]
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: session.run(names, {INPUT_NAME: np.ascontiguousarray(pixels)}))

    async def embed(self, model: str, pixels: np.ndarray) -> np.ndarray:
        (embedding,) = await self._run(model, pixels, False)
        return embedding

    async def embed_with_contributions(self, model: str, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embedding, contributions = await self._run(model, pixels, True)
        return embedding, contributions

    async def describe(self, model: str) -> ModelDescription:
        if model not in self._descriptions:
            raise EmbedderError(f"unknown model {model!r}: {', '.join(sorted(self._descriptions)) or 'none'} loaded")
        return self._descriptions[model]

    async def models(self) -> list[ModelDescription]:
        return [self._descriptions[n] for n in sorted(self._descriptions)]

    async def ready(self) -> bool:
        return bool(self._sessions)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _first(folder: Path, *names: str) -> Path:
    return next((folder / n for n in names if (folder / n).exists()), folder / names[-1])


def _describe(name: str, session: ort.InferenceSession) -> ModelDescription:
    """Dimension, input side and regions (what Triton reads from config.pbtxt): the input side from the graph, the
    outputs' sizes from one inference of a black image (exported graphs leave some output dims symbolic)."""
    side = int(session.get_inputs()[0].shape[-1])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {INPUT_NAME: np.zeros((1, 3, side, side), np.uint8)}), strict=True))
    regions = outputs[PATCH_CONTRIBUTIONS_OUTPUT].shape[1] if PATCH_CONTRIBUTIONS_OUTPUT in outputs else 0
    return ModelDescription(name, int(outputs[EMBEDDING_OUTPUT].shape[-1]), side, int(regions), 0)
