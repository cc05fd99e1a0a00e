"""The few gateway calls the benchmarks make besides their measured load, through the generated gRPC stubs."""

from __future__ import annotations

import grpc

from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

TIMEOUT_S = 60.0


def stored_items(address: str, model: str) -> int:
    """How many items the gateway says ``model``'s collection holds (0 when it does not serve the model)."""
    with grpc.insecure_channel(address) as channel:
        reply = search_pb2_grpc.SearchServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=TIMEOUT_S)
    return next((m.count for m in reply.models if m.name == model), 0)


def delete(address: str, model: str, ids: list[str], chunk: int = 1000) -> int:
    """Deletes ``ids`` from ``model``'s collection, ``chunk`` ids per call; returns how many were deleted."""
    deleted = 0
    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for i in range(0, len(ids), chunk):
            deleted += stub.Delete(pb.DeleteRequest(model=model, ids=ids[i:i + chunk]), timeout=TIMEOUT_S).deleted
    return deleted
