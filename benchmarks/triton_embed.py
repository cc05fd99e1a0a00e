"""One embedding through Triton (the wheel's binary, python backend) vs ONNX Runtime called directly.

Latency of one image (p50/p99) and throughput at concurrency 1 and 16, per served model."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from rich.console import Console
from rich.table import Table

from benchmarks.common import latency_ms, throughput, write_result
from export.onnx_export import EMBEDDING_OUTPUT, INPUT_NAME
from export.parity import onnx_session, real_images
from export.repository import export_repository
from extractors.registry import get_spec
from server.launchers.triton import TritonServer
from server.settings import Settings

console = Console()


def run(models: list[str] | None = None, seconds: float = 5.0) -> dict:
    models = models or Settings().models
    results: dict = {"models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_repository(models, repo, parity=False)
        with TritonServer(repo) as triton:
            for model in models:
                size = get_spec(model).input_size
                one = real_images(size, 1)
                session = onnx_session(repo / model / "1" / "model.onnx")
                client = grpcclient.InferenceServerClient(triton.grpc_url)
                def direct(x=one, s=session):
                    return s.run([EMBEDDING_OUTPUT], {INPUT_NAME: x})[0]

                def via_triton(x=one, m=model, url=triton.grpc_url, local=threading.local()):
                    # One client per thread: tritonclient's sync client is not meant to be shared by threads.
                    c = getattr(local, "client", None) or grpcclient.InferenceServerClient(url)
                    local.client = c
                    inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), "UINT8")
                    inp.set_data_from_numpy(x)
                    return c.infer(m, [inp], outputs=[grpcclient.InferRequestedOutput(EMBEDDING_OUTPUT)])

                n = 200 if size <= 32 else 40
                row = {
                    "onnxruntime_latency": latency_ms(direct, n),
                    "triton_latency": latency_ms(via_triton, n),
                    "onnxruntime_c1": throughput(direct, 1, seconds),
                    "onnxruntime_c16": throughput(direct, 16, seconds),
                    "triton_c1": throughput(via_triton, 1, seconds),
                    "triton_c16": throughput(via_triton, 16, seconds),
                }
                stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
                row["triton_inference_count"] = int(stats.get("inference_count", 0))
                row["triton_execution_count"] = int(stats.get("execution_count", 0))
                row["triton_c16_vs_c1"] = round(row["triton_c16"]["items_per_s"] / row["triton_c1"]["items_per_s"], 2)
                results["models"][model] = row
    table = Table(title="one image: Triton vs ONNX Runtime direct")
    for col in ("model", "ORT p50 ms", "Triton p50 ms", "ORT c1 img/s", "ORT c16 img/s", "Triton c1 img/s",
                "Triton c16 img/s", "c16/c1", "executions/inferences"):
        table.add_column(col)
    for model, r in results["models"].items():
        table.add_row(model, str(r["onnxruntime_latency"]["p50_ms"]), str(r["triton_latency"]["p50_ms"]),
                      str(r["onnxruntime_c1"]["items_per_s"]), str(r["onnxruntime_c16"]["items_per_s"]),
                      str(r["triton_c1"]["items_per_s"]), str(r["triton_c16"]["items_per_s"]),
                      str(r["triton_c16_vs_c1"]), f"{r['triton_execution_count']}/{r['triton_inference_count']}")
    console.print(table)
    path = write_result("triton_embed", results)
    console.print(f"written to {path}")
    return results


if __name__ == "__main__":
    np.random.seed(0)
    run()
