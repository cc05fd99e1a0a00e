"""Targets against training compute: checkpoints of one DINO run measured with the headline's DINO numbers, and
what more epochs would buy, extrapolated (and labelled so).

Each checkpoint (a teacher backbone file and the epochs it had trained) is measured exactly as the served DINO
model is in ``headline.json``: its whitening is fitted the same way (``extractors.fit_whitening``, 20k training
images, no labels), then
- ``knn20`` and ``within_group_knn20``: ``semantic_bias`` on the full 60k / 10k split,
- ``geometric_mean_r_at_1``: the graded near-duplicate protocol's geometric levels (crop/zoom, translation, flip,
  rotation), 1,000 edited test images among all 70,000, the served whitened descriptor,
- ``label_efficiency_10``: ``label_efficiency`` with 10 labelled images per class (DINO side).

The fit is least squares of each number against log2(epochs) over the measured checkpoints (gains per doubling of
compute, the usual shape of these curves); ``extrapolated`` gives its value at 2x and 4x the last checkpoint's
epochs and the epochs at which it would reach the target. It is an extrapolation from a few points, not a
measurement: the report says so wherever it is shown.

``python -m evaluation.learning_curve --checkpoint 11=path/a.pth --checkpoint 18=path/b.pth ... [--out DIR]``
writes ``DIR/learning_curve.json`` and ``DIR/figures/learning_curve.png`` (default DIR: reports/comparison). A
checkpoint already in that file with the same epochs, file contents (sha256) and mode is not measured again, so a
run that goes on adds its new checkpoints only.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from evaluation.descriptors import CLS_GEM_WHITENED
from evaluation.figures import pyplot, save_figure
from evaluation.headline import ROLES, dino_thresholds
from evaluation.label_efficiency import label_efficiency
from evaluation.names import DEFAULT_OUT
from evaluation.near_duplicates import graded_near_duplicates
from evaluation.semantic_bias import load_data, semantic_bias
from extractors.copies import geometric_level_names
from extractors.fit_whitening import fit_whitening
from extractors.registry import REGISTRY, get_spec

console = Console()
METRICS = ("knn20", "within_group_knn20", "geometric_mean_r_at_1", "label_efficiency_10")


def _register_checkpoint(epochs: int, weights: Path, folder: Path) -> str:
    """A registry entry for one checkpoint of the DINO run: the served DINO spec with other weights and whitening."""
    name = f"{ROLES['dino']}@{epochs}"
    whitening = folder / f"whitening_{epochs}.pth"
    REGISTRY[name] = replace(get_spec(ROLES["dino"]), name=name, weights=lambda: Path(weights),
                             whitening=lambda: whitening)
    return name


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def measure_checkpoint(name: str, data: dict, quick: bool = False) -> dict:
    """The headline's DINO numbers for the registered checkpoint ``name`` (its whitening is fitted first)."""
    t0 = time.perf_counter()
    fit_whitening(name)
    sb = semantic_bias([name], quick=quick, data=data)[name]
    nd = graded_near_duplicates([name], quick=quick, descriptor=CLS_GEM_WHITENED, compare_descriptors=False,
                                photos=False, levels=geometric_level_names())
    le = label_efficiency(quick=quick, ns=(10,), features=name, trained=None, references=(), data=data)["10"]
    return {"knn20": sb["knn20"], "within_group_knn20": sb["within_group_knn20"]["mean"],
            "geometric_mean_r_at_1": nd["fashion_mnist"]["results"][name]["geometric_mean_r_at_1"],
            "label_efficiency_10": le["dino_features"], "wall_s": round(time.perf_counter() - t0, 1)}


def fit_log2(epochs: list[float], values: list[float]) -> tuple[float, float] | None:
    """Least-squares ``value = a + b * log2(epochs)``: (a, b), or None with fewer than two distinct epochs."""
    x = np.log2(np.asarray(epochs, dtype=np.float64))
    if len(set(x.tolist())) < 2:
        return None
    b, a = np.polyfit(x, np.asarray(values, dtype=np.float64), 1)
    return float(a), float(b)


def epochs_to_reach(fit: tuple[float, float] | None, target: float) -> float | None:
    """Epochs at which the fitted line reaches ``target``; None when it never does (flat or falling)."""
    if fit is None:
        return None
    a, b = fit
    if b <= 0:
        return None
    return float(2 ** ((target - a) / b))


def targets_from_headline(headline: dict) -> dict[str, float]:
    """Each metric's target on the committed comparison (``evaluation.headline.dino_thresholds``), where measured."""
    return {m: v for m, v in dino_thresholds(headline).items() if v is not None}


def extrapolate(points: dict[int, dict], targets: dict[str, float]) -> dict:
    """Per metric: the fit, its (extrapolated) value at 2x and 4x the last epochs, and the epochs to the target."""
    epochs = sorted(points)
    last = epochs[-1]
    out = {}
    for m in METRICS:
        fit = fit_log2(epochs, [points[e][m] for e in epochs])
        row: dict = {"fit": None if fit is None else {"a": fit[0], "b_per_doubling": fit[1]}}
        if fit is not None:
            row["at_2x_epochs"] = {"epochs": 2 * last, "value": fit[0] + fit[1] * math.log2(2 * last)}
            row["at_4x_epochs"] = {"epochs": 4 * last, "value": fit[0] + fit[1] * math.log2(4 * last)}
        if m in targets:
            row["target"] = targets[m]
            row["epochs_to_target"] = epochs_to_reach(fit, targets[m])
        out[m] = row
    return out


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    points = {int(e): v for e, v in result["points"].items()}
    epochs = sorted(points)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.4 * len(METRICS), 3.0), squeeze=False)
    for ax, m in zip(axes.flat, METRICS, strict=True):
        ax.plot(epochs, [points[e][m] for e in epochs], "o-", label="measured")
        ex = result["extrapolated"][m]
        if ex["fit"]:
            xs = np.geomspace(epochs[0], 4 * epochs[-1], 50)
            ax.plot(xs, ex["fit"]["a"] + ex["fit"]["b_per_doubling"] * np.log2(xs), "--", color="grey",
                    label="log-linear fit (extrapolation)")
        if "target" in ex:
            ax.axhline(ex["target"], color="red", lw=0.8, label="target")
        ax.set_xscale("log", base=2)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("DINO epochs (log scale)")
    axes.flat[0].legend(fontsize=6)
    return save_figure(fig, path, dpi=110)


def learning_curve(checkpoints: dict[int, Path], out_dir: Path = DEFAULT_OUT, quick: bool = False,
                   headline: dict | None = None) -> dict:
    """Measures every checkpoint (``{epochs: teacher backbone file}``), fits and extrapolates, and writes
    ``out_dir/learning_curve.json`` and ``out_dir/figures/learning_curve.png``."""
    out_dir = Path(out_dir)
    headline = headline if headline is not None else json.loads((out_dir / "headline.json").read_text())
    path = out_dir / "learning_curve.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    data = load_data(None)
    points, files = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for epochs, weights in sorted(checkpoints.items()):
            files[epochs] = {"path": str(weights), "sha256": sha256(weights)}
            old = before.get("checkpoints", {}).get(str(epochs))
            if before.get("quick") == quick and isinstance(old, dict) and old.get("sha256") == files[epochs]["sha256"]:
                points[epochs] = before["points"][str(epochs)]  # measured before: the same file, the same mode
                continue
            name = _register_checkpoint(epochs, Path(weights), Path(tmp))
            try:
                console.rule(f"[bold]{name}")
                points[epochs] = measure_checkpoint(name, data, quick)
                console.print(points[epochs])
            finally:
                REGISTRY.pop(name, None)
    result = {"quick": quick, "checkpoints": {str(e): files[e] for e in sorted(files)},
              "points": {str(e): points[e] for e in sorted(points)},
              "extrapolated": extrapolate(points, targets_from_headline(headline)),
              "note": "the fit and everything under 'extrapolated' are extrapolations from the measured points, "
                      "not measurements"}
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    plot(result, out_dir / "figures" / "learning_curve.png")
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, help="EPOCHS=PATH of a teacher backbone")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    checkpoints = {}
    for item in a.checkpoint:
        epochs, _, path = item.partition("=")
        if not epochs.isdigit() or not path:
            p.error(f"--checkpoint {item!r}: give EPOCHS=PATH, e.g. 18=weights/dino/teacher_backbone.pth")
        checkpoints[int(epochs)] = Path(path)
    learning_curve(checkpoints, a.out, a.quick)


if __name__ == "__main__":
    main()
