"""Every failure the gateway knows, as the gRPC status that tells the caller what to do (one mapping, used by the
interceptor for whole calls and by Upsert for per-item errors)."""

from __future__ import annotations

import asyncio

import grpc

from server.embedder import EmbedderError, EmbedderUnavailable
from server.imaging import ImageRejected
from server.validation import InvalidRequest
from server.vector_store import VectorStoreError, VectorStoreUnavailable


class RpcError(Exception):
    """A failure with an explicit status (NOT_FOUND, RESOURCE_EXHAUSTED ...)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata of a refusal for load: when a retry may succeed


class Overloaded(RpcError):
    """Refused for load, not for what was asked: RESOURCE_EXHAUSTED with a ``retry-after-ms`` hint. Only these (and
    UNAVAILABLE) are worth retrying; a RESOURCE_EXHAUSTED without the hint (an oversized image) never succeeds."""

    def __init__(self, message: str, retry_after_ms: float) -> None:
        self.retry_after_ms = max(1, round(retry_after_ms))
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{message}; retry in {self.retry_after_ms} ms")


def trailing_metadata_of(e: Exception) -> tuple[tuple[str, str], ...]:
    """The trailing metadata a failed call carries: the retry hint of a refusal for load, else none."""
    return ((RETRY_AFTER_KEY, str(e.retry_after_ms)),) if isinstance(e, Overloaded) else ()


def status_of(e: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(e, RpcError):
        return e.code, str(e)
    if isinstance(e, ImageRejected):
        return (grpc.StatusCode.RESOURCE_EXHAUSTED if e.too_large else grpc.StatusCode.INVALID_ARGUMENT), str(e)
    if isinstance(e, InvalidRequest | VectorStoreError | ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, EmbedderUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"embedding service unavailable, retry later: {e}"
    if isinstance(e, VectorStoreUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"vector database unavailable, retry later: {e}"
    if isinstance(e, EmbedderError):
        return grpc.StatusCode.INTERNAL, str(e)
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the request ran out of time"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}"
