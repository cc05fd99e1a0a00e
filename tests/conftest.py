"""Shared fixtures. Servers (Triton, Milvus, the gateway) start once per session on free loopback ports and
always stop; their fixtures live in tests/fixtures/ and are plugged in here."""

from __future__ import annotations

import torch

# Two cores in CI: more threads than cores only adds contention.
torch.set_num_threads(2)

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.triton", "tests.fixtures.milvus", "tests.fixtures.gateway"]
