"""SDK rules that hold before any call reaches a gateway, then the sync and async clients against a real one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from clients.sdk import AsyncSearchClient, Item, SearchClient, SearchError
from launchers.ports import free_port
from tests.fixtures.models import VIT_MODEL


def test_an_unknown_duplicate_policy_is_a_value_error_before_anything_is_sent():
    """The policy is checked by the caller's call: inside the request stream it would surface as an opaque
    UNKNOWN ("Exception iterating requests!"). Nothing listens on the port: nothing may be sent."""
    items = [Item("a", vector=[1.0, 0.0])]
    with SearchClient(f"127.0.0.1:{free_port()}") as client, pytest.raises(ValueError, match="dedupe"):
        client.upsert(items, model="m", duplicate_policy="dedupe")

    async def main() -> None:
        async with AsyncSearchClient(f"127.0.0.1:{free_port()}") as client:
            await client.upsert(items, model="m", duplicate_policy="dedupe")

    with pytest.raises(ValueError, match="dedupe"):
        asyncio.run(main())


def test_both_clients_find_the_same_duplicates_and_get_the_same_items(gateway):
    ids = gateway.index_fashion_mnist(30)

    def pairs(stream) -> tuple[list, dict]:
        messages = list(stream)
        assert messages[0].progress is not None and messages[-1].summary is not None
        return sorted(sorted(m.group[0]) for m in messages if m.group), messages[-1].summary

    with SearchClient(gateway.address) as client:
        sync_groups, sync_summary = pairs(client.find_duplicates(VIT_MODEL, min_score=-1.0, neighbours=2))
        sync_items = client.get(VIT_MODEL, ids[:3], include_vectors=True)

    async def main():
        async with AsyncSearchClient(gateway.address) as client:
            stream = [m async for m in client.find_duplicates(VIT_MODEL, min_score=-1.0, neighbours=2)]
            with pytest.raises(SearchError) as err:
                [m async for m in client.find_duplicates(VIT_MODEL, min_score=2.0)]
            return stream, await client.get(VIT_MODEL, ids[:3], include_vectors=True), err.value

    stream, async_items, err = asyncio.run(main())
    async_groups, async_summary = pairs(stream)
    assert set(ids) <= {i for g in sync_groups for i in g}  # a bound of -1 pairs every item with its neighbours
    assert async_groups == sync_groups and async_summary["groups"] == sync_summary["groups"]
    assert err.code == "INVALID_ARGUMENT" and "min_score" in err.details
    assert [i.id for i in async_items] == [i.id for i in sync_items] == ids[:3]
    for a, b in zip(async_items, sync_items, strict=True):
        assert np.array_equal(a.vector, b.vector) and a.metadata == b.metadata


def test_filters_from_json_lists_and_tuples():
    from clients.sdk import filters_to_proto
    from visualsearch.v1 import search_pb2 as pb

    (op_list,) = filters_to_proto({"label": ["in", [1, 2]]})  # JSON has no tuples: an operator first is an operator
    (op_tuple,) = filters_to_proto({"label": ("in", [1, 2])})
    assert op_list == op_tuple and op_list.op == pb.FILTER_OP_IN
    (equal,) = filters_to_proto({"tags": ["a", "b"]})  # any other list is a value
    assert equal.op == pb.FILTER_OP_EQ and [v.string_value for v in equal.value.list_value.values] == ["a", "b"]
    with pytest.raises(ValueError, match="unknown filter operator"):
        filters_to_proto({"label": ("~", 3)})
