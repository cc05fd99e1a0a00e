"""The training benchmark's BENCHMARKS.md section, from the result: throughput per preset and what an epoch costs."""

from __future__ import annotations

from benchmarks.common import Target, loadavg_sentence, section
from evaluation.document import Doc

# Sizes of the real folders, to turn images/s into an epoch's time (../shared/data/README.md).
FOLDERS = {"brain MRI Training/": 5_708, "GTSRB even tracks": 19_890, "CIFAR-10 train/": 50_000}


def targets(result: dict) -> list[Target]:
    return []  # throughput is reported per preset, the issue sets no bar for it


def _table(doc: Doc, result: dict) -> None:
    doc.p(f"The real training loop (DataLoader decoding in 1 worker process included) on {result['data']}, "
          f"{result['threads']} torch threads; steady state from the difference between {result['batches'][0]} and "
          f"{result['batches'][1]} batches. Ratio against `{result['baseline']}` (the served Fashion-MNIST DINO "
          "model's recipe), measured in the same run." + loadavg_sentence(result))
    rows = []
    for name, row in result["presets"].items():
        epochs = [f"{n / row['images_per_s'] / 60:.1f}" for n in FOLDERS.values()]
        rows.append([f"`{name}`", row["network"], row["crops"], str(row["batch_size"]),
                     f"{row['images_per_s']:.1f}", f"{row['vs_baseline']:.2f}x", *epochs])
    doc.table(["preset", "network", "crops per image", "batch", "images/s", "vs baseline",
               *[f"epoch min, {k}" for k in FOLDERS]], rows)


def markdown(result: dict) -> str:
    return section("Training throughput per preset (`benchmarks/training/`)", result, _table)
