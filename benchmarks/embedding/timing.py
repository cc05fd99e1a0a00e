"""Timing primitives: the machine's float32 matmul peak, interleaved rounds of several callables (so a background
job slows all of them alike), and FLOPs per image."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def sgemm_peak(sizes: tuple[int, ...], repeats: int) -> dict:
    """GFLOP/s of numpy float32 ``a @ b`` (n x n, 2 n^3 FLOPs), best of ``repeats`` per size."""
    rng = np.random.default_rng(0)
    per_size = {}
    for n in sizes:
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        a @ b
        best = min(timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        per_size[str(n)] = round(2 * n**3 / best / 1e9, 1)
    return {"gflops": max(per_size.values()), "per_size": per_size, "repeats": repeats,
            "library": "numpy float32 matmul (" + _blas_name() + ")"}


def _blas_name() -> str:
    with contextlib.suppress(Exception):
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    return "numpy's BLAS"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], budget_s: float, min_rounds: int, max_rounds: int = 1000,
                warmup: bool = True) -> dict[str, dict]:
    """One call of each function per round, the order rotating, until ``budget_s`` has passed and ``min_rounds`` are
    done (after one unrecorded call of each when ``warmup``): per function, best and p50 seconds and the calls."""
    names = list(fns)
    for name in names if warmup else []:  # first calls allocate, open connections, fill caches
        fns[name]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.perf_counter()
    r = 0
    while r < max_rounds and (r < min_rounds or time.perf_counter() - t0 < budget_s):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(timed(fns[name]))
        r += 1
    return {n: {"best_s": min(s), "p50_s": float(np.median(s)), "calls": len(s)} for n, s in samples.items()}


def flops_per_image(model: torch.nn.Module, size: int) -> int:
    """FLOPs of one image, one multiply-add = 2. Attention is counted through torch's math implementation of
    ``scaled_dot_product_attention`` (two batched matmuls): the counter does not see inside the fused CPU kernel."""
    x = torch.zeros((1, 3, size, size), dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        model(x)
    return int(counter.get_total_flops())

