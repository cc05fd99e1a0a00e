"""Shared fixtures. Servers (Triton, Milvus, the gateway) start once per session on free loopback ports."""

from __future__ import annotations

import torch

# Two cores in CI: more threads than cores only adds contention.
torch.set_num_threads(2)
