"""The feature-extractor report: weighted 20-NN (DINO's protocol) on Fashion-MNIST, test queries against
the 60k training images, for raw pixels, a random ViT, our DINO ViT and our supervised ViT; plus the
training curves (20-NN against wall time and epochs) read from the committed training logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from extractors.datasets import load_fashion_mnist
from extractors.knn import knn_classify
from extractors.registry import COMMITTED_WEIGHTS, PIXELS, get_spec, load_extractor
from extractors.training import dataset_to_uint8

FMNIST_EXTRACTORS = [PIXELS, "random_vit_femto_p7_fmnist", "dino_vit_femto_p7_fmnist",
                     "supervised_vit_femto_p7_fmnist"]
console = Console()


@torch.no_grad()
def embed_uint8(name: str, images: torch.Tensor, batch_size: int = 1000, label: str = "") -> torch.Tensor:
    """Unit-norm embeddings of uint8 [N, 3, H, W] images by the registry's extractor ``name``."""
    model = load_extractor(name)
    chunks = [model(images[i:i + batch_size])
              for i in track(range(0, len(images), batch_size), description=label or name, console=console)]
    return torch.cat(chunks)


def knn_report(names: list[str], out_dir: Path, limit_train: int = 0, limit_test: int = 0) -> list[dict]:
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    if limit_train:
        train = train.subset(range(limit_train))
    if limit_test:
        test = test.subset(range(limit_test))
    x_train, x_test = dataset_to_uint8(train), dataset_to_uint8(test)
    y_train, y_test = torch.as_tensor(train.labels), torch.as_tensor(test.labels)
    rows = []
    for name in names:
        if not _weights_ready(name):
            console.print(f"[yellow]skipping {name}: its weights are not in {COMMITTED_WEIGHTS}[/]")
            continue
        t0 = time.perf_counter()
        f_train = embed_uint8(name, x_train, label=f"{name} (train)")
        f_test = embed_uint8(name, x_test, label=f"{name} (test)")
        embed_s = time.perf_counter() - t0
        row = {"extractor": name, "dim": f_train.shape[1], "labels_used": get_spec(name).labels_used,
               "knn20": _acc(knn_classify(f_train, y_train, f_test, k=20), y_test),
               "nn1": _acc(knn_classify(f_train, y_train, f_test, k=1), y_test),
               "embed_s": round(embed_s, 1), "n_train": len(train), "n_test": len(test)}
        rows.append(row)
        console.print(row)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "knn_report.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "knn_report.md").write_text(render_markdown(rows))
    plot_learning_curves(out_dir / "learning_curves.png")
    print_table(rows)
    return rows


def _weights_ready(name: str) -> bool:
    path = get_spec(name).weights()
    return path is None or path.exists()


def _acc(pred: torch.Tensor, y: torch.Tensor) -> float:
    return round(float((pred == y).float().mean()), 4)


def render_markdown(rows: list[dict]) -> str:
    lines = ["| extractor | labels used | dim | 20-NN acc | 1-NN acc |", "|---|---|---|---|---|"]
    lines += [f"| {r['extractor']} | {'yes' if r['labels_used'] else 'no'} | {r['dim']} | {r['knn20']:.4f} | "
              f"{r['nn1']:.4f} |" for r in rows]
    n = rows[0] if rows else {"n_train": 0, "n_test": 0}
    return (f"# Fashion-MNIST k-NN ({n['n_test']} test queries against {n['n_train']} training images, "
            "cosine, weighted vote T=0.07)\n\n" + "\n".join(lines) + "\n")


def print_table(rows: list[dict]) -> None:
    table = Table(title="Fashion-MNIST weighted k-NN (test vs train)")
    for col in ("extractor", "labels", "dim", "20-NN", "1-NN"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["extractor"], "yes" if r["labels_used"] else "no", str(r["dim"]), f"{r['knn20']:.4f}",
                      f"{r['nn1']:.4f}")
    console.print(table)


def plot_learning_curves(path: Path) -> None:
    """20-NN accuracy (fixed 10k/2k subset, measured during training) against epochs and wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ep, ax_t) = plt.subplots(1, 2, figsize=(11, 4))
    for folder, label in [("dino_vit_femto_p7_fmnist", "DINO (no labels)"),
                          ("supervised_vit_femto_p7_fmnist", "supervised")]:
        log_path = COMMITTED_WEIGHTS / folder / "log.jsonl"
        if not log_path.exists():
            continue
        log = [r for r in map(json.loads, log_path.read_text().splitlines()) if "knn20" in r]
        ax_ep.plot([r["epoch"] for r in log], [r["knn20"] for r in log], marker="o", label=label)
        ax_t.plot([r["wall_s"] / 60 for r in log], [r["knn20"] for r in log], marker="o", label=label)
    for ax, xlabel in ((ax_ep, "epoch"), (ax_t, "wall time on 2 CPU cores (min)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("20-NN accuracy (10k train / 2k test subset)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle("Fashion-MNIST ViT femto/7: k-NN accuracy of the embedding during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(names: list[str] | None = None, out_dir: Path = Path("reports/extractors")) -> list[dict]:
    return knn_report(names or FMNIST_EXTRACTORS, out_dir)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
