"""SDK rules that hold before any call reaches a gateway."""

from __future__ import annotations

import asyncio

import pytest

from clients.sdk import AsyncSearchClient, Item, SearchClient
from launchers.ports import free_port


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
