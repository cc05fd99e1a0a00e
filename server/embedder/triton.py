"""Embeddings from NVIDIA Triton over gRPC (``tritonclient.grpc.aio``).

One channel per Triton URL, reused for every call; several URLs (replicas) are used round-robin.
Every call has a deadline; UNAVAILABLE is retried a bounded number of times on the next replica, since
a restarting or overloaded replica is the common transient failure. Anything else fails at once."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME, PATCH_CONTRIBUTIONS_OUTPUT
from server.embedder.base import EmbedderError, EmbedderUnavailable, ModelDescription

_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class TritonEmbedder:
    def __init__(self, urls: list[str], timeout_s: float = 10.0, retries: int = 2, backoff_s: float = 0.05) -> None:
        if not urls:
            raise ValueError("TritonEmbedder needs at least one Triton gRPC URL (host:port)")
        self.clients = [grpcclient.InferenceServerClient(url=u) for u in urls]
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._next = itertools.cycle(range(len(self.clients)))
        self._descriptions: dict[str, ModelDescription] = {}

    async def _call(self, what: str, fn):
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            i = next(self._next)
            try:
                return await fn(self.clients[i])
            except InferenceServerException as e:
                status = str(e.status() or "")
                if not any(t in status for t in _TRANSIENT):
                    raise EmbedderError(f"Triton refused {what}: {e.message()}") from None
                last = e
            except (ConnectionError, OSError) as e:
                last = e
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * (2**attempt))
        raise EmbedderUnavailable(f"Triton unavailable for {what} at {', '.join(self.urls)}: {last}")

    async def embed(self, model: str, pixels: np.ndarray) -> np.ndarray:
        (embedding,) = await self._infer(model, pixels, [EMBEDDING_OUTPUT])
        return embedding

    async def embed_with_contributions(self, model: str, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embedding, contributions = await self._infer(model, pixels, [EMBEDDING_OUTPUT, PATCH_CONTRIBUTIONS_OUTPUT])
        return embedding, contributions

    async def _infer(self, model: str, pixels: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """Asks Triton for ``names`` only (the served graph computes no output nobody asked for), in requests of at
        most the model's ``max_batch_size`` images: Triton refuses a larger one."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise EmbedderError(f"pixels must be uint8 [B, 3, S, S], got {pixels.dtype} {pixels.shape}")
        step = (await self.describe(model)).max_batch_size or len(pixels)
        if len(pixels) <= step:
            return await self._infer_once(model, pixels, names)
        parts = [await self._infer_once(model, pixels[i:i + step], names) for i in range(0, len(pixels), step)]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    async def _infer_once(self, model: str, pixels: np.ndarray, names: list[str]) -> list[np.ndarray]:
        inp = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(pixels))
        out = [grpcclient.InferRequestedOutput(n) for n in names]

        async def infer(client):
            result = await client.infer(model, [inp], outputs=out, client_timeout=self.timeout_s)
            return [result.as_numpy(n) for n in names]

        return await self._call(f"{', '.join(names)} with {model}", infer)

    async def describe(self, model: str) -> ModelDescription:
        if model not in self._descriptions:
            async def config(client):
                return await client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)

            cfg = (await self._call(f"the config of {model}", config))["config"]
            dims = [int(d) for d in cfg["input"][0]["dims"]]
            out = next(o for o in cfg["output"] if o["name"] == EMBEDDING_OUTPUT)
            parts = next((o for o in cfg["output"] if o["name"] == PATCH_CONTRIBUTIONS_OUTPUT), None)
            regions = int(parts["dims"][0]) if parts is not None else 0
            self._descriptions[model] = ModelDescription(model, int(out["dims"][0]), dims[-1], regions,
                                                         int(cfg.get("max_batch_size", 0)))
        return self._descriptions[model]

    async def models(self) -> list[ModelDescription]:
        async def index(client):
            return await client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s)

        names = [m["name"] for m in (await self._call("the model list", index)).get("models", [])
                 if m.get("state") == "READY"]
        return [await self.describe(n) for n in sorted(names)]

    async def ready(self) -> bool:
        """True when at least one replica answers ready within a short deadline (health checks call this)."""
        for client in self.clients:
            try:
                if await client.is_server_ready(client_timeout=1.0):
                    return True
            except (InferenceServerException, ConnectionError, OSError):
                continue
        return False

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
