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
