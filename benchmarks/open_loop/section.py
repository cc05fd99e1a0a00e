"""The open-loop benchmark's BENCHMARKS.md section and targets, from the result."""

from __future__ import annotations

import math
import os

from benchmarks import common
from benchmarks.common import Target, cpu_split, loadavg_sentence, section
from benchmarks.open_loop.benchmark import OBJECTIVE_P99_MS, TARGET_FMNIST_QPS, TARGET_FRACTION_OF_ORT
from evaluation.document import Doc


def _ms(x: float | None) -> str:
    return "-" if x is None else ("unserved" if not math.isfinite(x) else f"{x:.1f} ms")


def _plot_link(result: dict) -> str:
    """The PNG (written next to the results) as seen from the BENCHMARKS.md the section goes into."""
    from benchmarks import report

    return os.path.relpath(common.RESULTS / result["plot"], report.default_output().parent)


def _rate(best: float | None) -> str:
    return "none" if best is None else f"{best:.0f}/s"


def targets(result: dict) -> list[Target]:
    fm, ph = result["fmnist"], result["photos"]
    ort = result["onnxruntime_alone"]["images_per_s"]
    best_fm, best_ph = fm["best_rate"] or 0, ph["best_rate"] or 0
    indexing = result["photo_indexing"]["images_per_s"]
    return [
        Target(f"Fashion-MNIST search by image over {result['indexed']:,} items, p99 <= {OBJECTIVE_P99_MS:.0f} ms",
               f">= {TARGET_FMNIST_QPS:.0f} queries/s offered", f"{best_fm:.0f}/s", best_fm >= TARGET_FMNIST_QPS),
        Target(f"photo search, p99 <= {OBJECTIVE_P99_MS:.0f} ms", f">= {TARGET_FRACTION_OF_ORT:.0%} of ONNX Runtime "
               f"alone ({ort:.0f} images/s)", f"{best_ph:.0f}/s ({best_ph / ort:.0%})",
               best_ph >= TARGET_FRACTION_OF_ORT * ort),
        Target("photo indexing", f">= {TARGET_FRACTION_OF_ORT:.0%} of ONNX Runtime alone ({ort:.0f} images/s)",
               f"{indexing:.0f} images/s ({indexing / ort:.0%})", indexing >= TARGET_FRACTION_OF_ORT * ort)]


def _method(doc: Doc, result: dict) -> None:
    doc.p(f"Open loop: requests arrive as a Poisson process at a fixed offered rate, whatever the answers do, over "
          f"{result['channels']} gRPC channels from one asyncio client process; each rate is held "
          f"{result['seconds_per_step']:.0f} s. Latency counts from each request's scheduled arrival; every call has "
          f"a {result['deadline_s']:.0f} s deadline, and a call not answered OK (refused with a retry hint, or past "
          "its deadline) counts as infinitely late, so *p99 <= objective* means 99% of the offered requests were "
          f"served within it. Fashion-MNIST: {result['fmnist']['model']} over {result['indexed']:,} indexed images "
          f"(PNG queries, 28 px, top_k {result['top_k']}); photos: {result['photos']['model']} over the "
          f"{result['photos']['indexed']} indexed copies of the bundled photos (JPEG queries, 800 px). CPU ms/query: "
          "CPU time of each process during the step / queries served (client, gateway, Triton, Milvus). ONNX Runtime "
          "alone: the exported EfficientNet-Lite0 in this process with the session Triton serves it with (same graph, "
          f"options and chunking), batches of {result['onnxruntime_alone']['batch']} decoded photos, "
          f"{result['onnxruntime_alone']['threads']} threads. "
          f"Photo indexing: Upsert streams of {result['photo_indexing']['batch']} photos (800 px JPEGs), "
          f"{result['photo_indexing']['streams']} at a time, end to end."
          + loadavg_sentence(result))


def _curve(doc: Doc, label: str, block: dict) -> None:
    rows = [[f"{r['offered_qps']:.0f}", f"{r['served_qps']:.0f}", _ms(r["p50_ms"]), _ms(r["p99_ms"]),
             ", ".join(f"{k} {v}" for k, v in r["failed"].items()) or "-",
             f"{r['cpu_ms_per_query_total']:.2f} ({cpu_split(r['cpu_ms_per_query'])})"] for r in block["rows"]]
    doc.p(f"{label}: highest offered rate with p99 <= {OBJECTIVE_P99_MS:.0f} ms: **{_rate(block['best_rate'])}**.")
    doc.table(["offered/s", "served/s", "p50", "p99", "not served",
               "CPU ms/query (client / gateway / Triton / Milvus)"], rows)


def _results(doc: Doc, result: dict) -> None:
    doc.p(f"![latency against offered rate]({_plot_link(result)})")
    _curve(doc, "Fashion-MNIST search by image", result["fmnist"])
    _curve(doc, "Photo search", result["photos"])
    if variants := result.get("variants"):
        default = {r["offered_qps"]: r for r in result["fmnist"]["rows"]}
        rows = [[label, f"{r['offered_qps']:.0f}", _ms(default.get(r["offered_qps"], {}).get("p99_ms")),
                 _ms(r["p99_ms"]), f"{r['served_qps']:.0f}", _ms(r["ok_p99_ms"])]
                for label, v in variants.items() for r in v["rows"]]
        doc.p("Tuning candidates, each on a gateway restarted with its settings, measured in the same run "
              "(Fashion-MNIST; best rate at the objective: "
              + "; ".join(f"{label}: {_rate(v['best_rate'])}" for label, v in variants.items()) + "):")
        doc.table(["variant", "offered/s", "p99 default", "p99 variant", "served/s variant",
                   "p99 of the answered, variant"], rows)
    ort, idx = result["onnxruntime_alone"], result["photo_indexing"]
    doc.p(f"ONNX Runtime alone: {ort['images_per_s']:.0f} images/s. Photo indexing through the gateway: "
          f"{idx['images_per_s']:.0f} images/s ({idx['images']} photos, {idx['errors']} errors).")


def markdown(result: dict) -> str:
    return section("Throughput at a latency objective, open loop (`benchmarks/open_loop/`)", result, _method,
                   _results)
