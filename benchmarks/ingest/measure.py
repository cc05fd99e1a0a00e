"""One ``vsearch index`` run through the stack, and where its time went: CPU seconds of every process (the command's
own, the gateway's, Triton's with its python-backend stubs, Milvus's), the gateway's Upsert/Get RPC times (its
Prometheus metrics), Triton's own statistics, and what encoding the images to PNG costs."""

from __future__ import annotations

import functools
import io
import time
import urllib.request

from benchmarks import vsearch_index
from benchmarks.cpu import CpuMeter
from benchmarks.triton_stats import stats_at


def gateway_metrics(port: int) -> dict[str, float]:
    """RPC counts and summed seconds by method from the gateway's Prometheus endpoint ({} when unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "vsearch_request_seconds_sum":
                out[f"{s.labels['method']}_s"] = s.value
            elif s.name == "vsearch_request_seconds_count":
                out[f"{s.labels['method']}_n"] = s.value
    return out


def triton_stats(url: str, model: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in stats_at(url, model).items()}
    except Exception:  # noqa: BLE001 - the split is a bonus; the run itself must not fail on it
        return {}


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


@functools.cache
def png_encode_seconds(dataset: str, n: int) -> float:
    """Seconds to encode the first ``n`` images of the data set to PNG on one thread, the way the SDK sends a PIL
    image (``image.save(buf, "PNG")``). Measured here, apart: the command's own process cannot be timed inside."""
    from extractors.datasets import load_fashion_mnist

    if dataset != "fashion-mnist":
        raise ValueError(f"PNG timing knows fashion-mnist only, not {dataset!r}")
    ds = load_fashion_mnist("all")
    images = [ds.pil(i) for i in range(min(n, len(ds)))]
    t0 = time.perf_counter()
    for image in images:
        image.save(io.BytesIO(), "PNG")
    return time.perf_counter() - t0


def measure(stack, model: str, n: int, batch_size: int, concurrency: int, resume: bool = True,
            dataset: str = vsearch_index.DATASET) -> dict:
    """One ``vsearch index --dataset DATASET --limit n`` run through ``stack``, with its split."""
    pids = {"gateway": stack.gateway.proc.pid, "triton": stack.triton.pid,
            "milvus": stack.milvus.pid if stack.milvus else None}
    meter = CpuMeter(pids)
    g0, t0 = gateway_metrics(stack.gateway.metrics_port), triton_stats(stack.triton.grpc_url, model)
    meter.start()
    run = vsearch_index.index(stack.gateway.address, model, n, batch_size=batch_size, concurrency=concurrency,
                              resume=resume, dataset=dataset)
    cpu = {"client": round(run.cpu_s, 6), **meter.stop()}
    g = _diff(gateway_metrics(stack.gateway.metrics_port), g0)
    t = _diff(triton_stats(stack.triton.grpc_url, model), t0)
    summary = run.summary
    done = max(summary["indexed"], 1)
    png_s = png_encode_seconds(dataset, n)
    row = {"batch_size": batch_size, "concurrency": concurrency, "resume": resume, "images": n,
           "indexed": summary["indexed"],
           "skipped_existing": summary["skipped_existing"], "errors": summary["errors"],
           "seconds": summary["seconds"], "images_per_s": summary["images_per_s"], "wall_s": round(run.wall_s, 2),
           "cpu_s": cpu, "cpu_ms_per_image": {k: round(v * 1e3 / done, 3) for k, v in cpu.items()},
           "client_png_encode_s": round(png_s, 3),
           "client_png_encode_us_per_image": round(png_s * 1e6 / max(n, 1), 1)}
    if g.get("Upsert_n"):
        row["gateway"] = {"upsert_rpcs": int(g["Upsert_n"]), "upsert_rpc_s": round(g["Upsert_s"], 2),
                          "upsert_rpc_mean_ms": round(g["Upsert_s"] * 1e3 / g["Upsert_n"], 1),
                          "get_rpcs": int(g.get("Get_n", 0)), "get_rpc_s": round(g.get("Get_s", 0.0), 2),
                          "get_rpc_mean_ms": round(g.get("Get_s", 0.0) * 1e3 / max(g.get("Get_n", 0), 1), 1)}
    if t.get("executions"):
        compute_s, queue_s = t["compute_ns"] / 1e9, t["queue_ns"] / 1e9
        row["triton"] = {"requests": int(t["requests"]), "executions": int(t["executions"]),
                         "inferences": int(t["inferences"]),
                         "mean_batch": round(t["inferences"] / t["executions"], 1),
                         "compute_s": round(compute_s, 2), "queue_s": round(queue_s, 2),
                         "compute_ms_per_image": round(compute_s * 1e3 / max(t["inferences"], 1), 3)}
    return row
