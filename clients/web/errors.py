"""gRPC status -> HTTP status for the page's JSON API: the mapping of Google's HTTP/gRPC transcoding
(``google/rpc/code.proto``), so a browser and any HTTP tool read the same meaning the gateway meant."""

from __future__ import annotations

HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def http_status(grpc_code: str) -> int:
    return HTTP_STATUS.get(grpc_code, 500)
