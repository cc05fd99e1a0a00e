"""Triton's own statistics for one model, read before and after a measurement: what it ran (inferences, executions:
their ratio is the mean batch) and where a request's time went (queue, compute)."""

from __future__ import annotations

import time

import tritonclient.grpc as grpcclient


def stats_at(url: str, model: str) -> dict[str, int]:
    """Counters since Triton loaded the model: inferences (images), executions (model calls), requests, and the
    summed queue and compute (input + infer + output) nanoseconds of its requests."""
    with grpcclient.InferenceServerClient(url) as client:
        s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    inf = s.get("inference_stats", {})
    return {"inferences": int(s.get("inference_count", 0)), "executions": int(s.get("execution_count", 0)),
            "requests": int(inf.get("success", {}).get("count", 0)),
            "queue_ns": int(inf.get("queue", {}).get("ns", 0)),
            "compute_ns": sum(int(inf.get(k, {}).get("ns", 0)) for k in
                              ("compute_input", "compute_infer", "compute_output"))}


def settled_stats(url: str, model: str, timeout_s: float = 2.0) -> dict[str, int]:
    """Statistics once they stop changing: Triton counts an execution after its responses are on their way, so the
    last responses of a measurement can reach the client before they are counted."""
    stats = stats_at(url, model)
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        again = stats_at(url, model)
        if again == stats:
            break
        stats = again
    return stats


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def mean_batch(d: dict[str, int], digits: int = 2) -> float | None:
    """Inferences per execution over a difference of statistics (None when nothing ran)."""
    return round(d["inferences"] / d["executions"], digits) if d.get("executions") else None
