"""The explain benchmark's BENCHMARKS.md section and its target, from the result."""

from __future__ import annotations

from benchmarks.common import Target, loadavg_sentence, section
from evaluation.document import Doc

# A plain search must not pay for the extra output: the served graph's embedding path within noise of the bare export.
MAX_PLAIN_VS_BARE = 1.10


def targets(result: dict) -> list[Target]:
    worst = max(row["plain_vs_bare"] for graph in result["graph"].values() for row in graph.values())
    return [Target("plain searches with the extra output available",
                   f"served graph's embedding path <= {MAX_PLAIN_VS_BARE}x the bare embedding export",
                   f"worst {worst:.2f}x", worst <= MAX_PLAIN_VS_BARE)]


def _graph(doc: Doc, result: dict) -> None:
    doc.p("ONNX Runtime as Triton's python backend runs it (fused attention, one process), p50 per call, measured in "
          "interleaved rounds: the bare embedding export, the served graph cut to its embedding (what a plain search "
          "asks Triton for) and the served graph with `patch_contributions` (what explain asks for)."
          + loadavg_sentence(result))
    rows = []
    for model, graph in result["graph"].items():
        for batch, row in graph.items():
            rows.append([model, batch, f"{row['bare']['p50_ms']:.2f}", f"{row['served_plain']['p50_ms']:.2f}",
                         f"{row['plain_vs_bare']:.2f}x", f"{row['served_explain']['p50_ms']:.2f}",
                         f"{row['explain_vs_bare']:.2f}x"])
    doc.table(["model", "batch", "bare ms", "served, plain ms", "plain / bare", "served, explain ms",
               "explain / bare"], rows)


def _search(doc: Doc, result: dict) -> None:
    doc.p(f"One Search through the gateway (top {result['top_k']}, with thumbnails, one caller), ms, p50 (best) "
          "over interleaved rounds. explain embeds the query and the hits' stored thumbnails in one Triton call and "
          "takes numpy dot products; explain_png also draws two PNG overlays per hit.")
    doc.table(["model", "plain", "explain", "explain_png"],
              [[model, *(f"{row[v]['p50_ms']:.1f} ({row[v]['best_ms']:.1f})" for v in ("plain", "explain",
                                                                                      "explain_png"))]
               for model, row in result["search"].items()])


def markdown(result: dict) -> str:
    return section("Why-similar explanations: cost (`benchmarks/explain/`)", result, _graph, _search)
