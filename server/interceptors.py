"""One interceptor for every SearchService RPC: bearer-token auth, error -> status mapping, metrics, logs.

Handlers raise plain exceptions; this is the one place that turns them into the gRPC status that tells the
caller what to fix, so no handler can leak an UNKNOWN or a stack trace."""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator

import grpc

from server.errors import status_of, trailing_metadata_of
from server.metrics import GatewayMetrics
from server.settings import Settings
from server.validation import InvalidRequest

log = logging.getLogger("vsearch.gateway")
SERVICE_PREFIX = "/visualsearch.v1.SearchService/"
MUTATING = {"Upsert", "Delete"}


class Undecodable:
    """Stands in for a request message whose bytes do not parse, so that the call is answered INVALID_ARGUMENT
    (grpc answers a deserializer's exception with UNKNOWN)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def rejected(self) -> InvalidRequest:
        return InvalidRequest(f"the request is not a valid protobuf message for this RPC: {self.error}"[:300])


def lenient(deserialize):
    if deserialize is None:
        return None

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as e:  # noqa: BLE001 - DecodeError and whatever else a parser raises on garbage
            return Undecodable(e)

    return parse


async def checked(requests):
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.rejected()
        yield request


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    def _authorized(self, method: str, metadata) -> bool:
        token = self.settings.auth_token
        if not token or (method not in MUTATING and not self.settings.auth_reads):
            return True
        given = dict(metadata or ()).get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or not full.startswith(SERVICE_PREFIX):
            return handler  # health and reflection pass through untouched
        method = full.removeprefix(SERVICE_PREFIX)
        authorized = self._authorized(method, handler_call_details.invocation_metadata)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, authorized, handler.unary_stream),
                request_deserializer=lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        behavior = handler.unary_unary or handler.stream_unary

        async def wrapper(request, context):
            async with self._guarded(method, authorized, request, context):
                return await behavior(request if handler.unary_unary else checked(request), context)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(wrapper, request_deserializer=lenient(handler.request_deserializer),
                    response_serializer=handler.response_serializer)

    def _streaming(self, method: str, authorized: bool, behavior):
        """The same guard for a server-streaming RPC (FindDuplicates): a failure after some responses were sent ends
        the stream with the mapped status."""

        async def wrapper(request, context):
            async with self._guarded(method, authorized, request, context):
                async for response in behavior(request, context):
                    yield response

        return wrapper

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, authorized: bool, request, context) -> AsyncIterator[None]:
        """Every call of the service: refused before its handler without a token or with undecodable bytes, any
        failure ended with its mapped status (and retry hint), counted and timed per method."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if not authorized:
                code = grpc.StatusCode.UNAUTHENTICATED
                await context.abort(code, "missing or wrong token: send metadata 'authorization: Bearer <token>'")
            if isinstance(request, Undecodable):
                raise request.rejected()
            yield
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001 - mapped to a status right here
            code, message = status_of(e)  # set before abort raises: the metrics count the real status
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            else:
                log.info("%s -> %s: %s", method, code.name, message)
            await context.abort(code, message, trailing_metadata=trailing_metadata_of(e))
        finally:
            self.metrics.requests.labels(method, code.name).inc()
            self.metrics.latency.labels(method).observe(time.perf_counter() - start)
