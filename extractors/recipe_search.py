"""Short, equal-budget DINO runs that pick the recipe the long run uses.

Every candidate trains on the same first ``train_limit`` training images for the same number of epochs
(schedules complete inside the short run) and is scored on the training monitor's fixed subset (10,000
train images as the database, 2,000 test queries; raw pixels score 0.795 there). Short runs favour
recipes that converge fast, which is what 2 CPU cores need. ``python -m extractors.recipe_search`` writes
``reports/extractors/dino_recipe_search.{json,md}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import typer

from extractors.presets import DINO_PRESETS
from extractors.train_dino import DinoConfig, train_dino
from extractors.training import KnnMonitor, pixels_knn


def candidates(train_limit: int, epochs: int, threads: int) -> dict[str, DinoConfig]:
    short = dict(epochs=epochs, train_limit=train_limit, threads=threads, warmup_epochs=1,
                 warmup_teacher_temp_epochs=1, freeze_last_layer=0, knn_every=epochs)
    old = DINO_PRESETS["fmnist-femto-p7"].model_copy(update=short)
    fast_teacher = old.model_copy(update=dict(momentum_teacher=0.99, teacher_temp=0.07, out_dim=1024))
    crops = fast_teacher.model_copy(update=dict(global_crops_scale=(0.5, 1.0), local_crops_scale=(0.2, 0.5),
                                                local_crops_number=8))
    small_batch = crops.model_copy(update=dict(batch_size=64))
    p4 = crops.model_copy(update=dict(backbone=crops.backbone.model_copy(update=dict(patch_size=4)),
                                      local_crop_size=12))
    return {"p7 old preset": old, "p7 fast teacher (m 0.99, T 0.07, K 1024)": fast_teacher,
            "p7 fast teacher + crops (0.5-1 / 8 x 0.2-0.5)": crops, "p7 fast teacher + crops, batch 64": small_batch,
            "p4 fast teacher + crops": p4}


def main(out: Path = typer.Option(Path("reports/extractors")), runs: Path = typer.Option(Path("runs/recipe_search")),
         train_limit: int = 15000, epochs: int = 2, threads: int = 1, only: list[str] = typer.Option(None)) -> None:
    torch.set_num_threads(threads)
    monitor = KnnMonitor.fashion_mnist(10000, 2000)
    results_path = out / "dino_recipe_search.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["pixels"] = {"knn20": pixels_knn(monitor)}
    for i, (name, cfg) in enumerate(candidates(train_limit, epochs, threads).items()):
        if (only and str(i) not in only) or name in results:
            continue
        start = time.perf_counter()
        record = train_dino(cfg, runs / f"candidate_{i}", resume=False)
        results[name] = {"knn20": record["knn20"], "wall_s": round(time.perf_counter() - start, 1),
                         "final_loss": record["loss"], "teacher_std": record["teacher_std"],
                         "config": cfg.model_dump()}
        out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        print(name, results[name]["knn20"], results[name]["wall_s"], flush=True)
    lines = [f"# DINO recipe search ({train_limit} training images, {epochs} epochs each, {threads} thread)", "",
             "20-NN on the monitor subset (10k train db, 2k test queries).", "",
             "| recipe | 20-NN | wall s | final loss | teacher std |", "|---|---|---|---|---|"]
    for name, r in results.items():
        loss, std = r.get("final_loss"), r.get("teacher_std")
        lines.append(f"| {name} | {r['knn20']:.4f} | {r.get('wall_s', '')} | {'' if loss is None else f'{loss:.3f}'} "
                     f"| {'' if std is None else f'{std:.4f}'} |")
    missing = [name for name in candidates(train_limit, epochs, threads) if name not in results]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    (out / "dino_recipe_search.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    typer.run(main)
