"""The latency curve as a PNG: p50 and p99 against the offered rate, one panel per workload, the objective drawn."""

from __future__ import annotations

import math

from benchmarks import common
from evaluation.figures import pyplot, save_figure

FILE = "open_loop.png"


def plot_curves(result: dict) -> str:
    """Writes the PNG next to the results; returns its name."""
    plt = pyplot()
    panels = [("fmnist", "Fashion-MNIST search by image"), ("photos", "photo search (800 px JPEG)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(9, 3.4))
    objective = result["objective_p99_ms"]
    for ax, (key, title) in zip(axes, panels, strict=True):
        rows = result[key]["rows"]
        rates = [r["offered_qps"] for r in rows]
        for q, style in (("p50_ms", "o-"), ("p99_ms", "s-")):
            # An unanswered share above 1% makes p99 infinite: drawn at the top of the axis.
            values = [r[q] if r[q] is not None and math.isfinite(r[q]) else 2000.0 for r in rows]
            ax.plot(rates, values, style, label=q.removesuffix("_ms"), markersize=4)
        ax.axhline(objective, color="grey", linestyle="--", linewidth=1, label=f"objective {objective:.0f} ms")
        ax.set_yscale("log")
        ax.set_ylim(1, 2000)
        ax.set_xlabel("offered queries/s (Poisson arrivals)")
        ax.set_ylabel("latency, ms")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, common.RESULTS / FILE, dpi=80)
    return FILE
