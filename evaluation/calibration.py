"""Fits a model's verdict thresholds (``server/calibration.py``) from labelled pairs of the graded near-duplicate
protocol (``evaluation/near_duplicates.py``, ``extractors/copies.py``), and reports them.

Pairs, for one data set:
- positives: (copy, its original) for every graded level of every original (``extractors.copies.ALL_LEVELS``);
  the EXACT positives are the identity and JPEG re-encodes at quality ``EXACT_JPEG_QUALITIES`` (the same image up
  to re-encoding), which also count as near-duplicate positives;
- negatives: (copy, the best-scoring database image that is not its original): the hardest wrong hit a search
  returns beside the right one, often the same class (a hard negative); plus each distinct query's best hit
  (images not in the database). A database image pixel-identical to the original is label noise, not a
  negative: dropped and counted.

Each threshold is the lowest score at which precision stays >= ``target`` for every higher threshold, with
positives and negatives weighted 1:1 (precision = TPR / (TPR + FPR)), so the bound does not depend on how many
pairs of each kind were drawn. Its recall is the share of its positives at or above it. NEAR_DUPLICATE is fitted
on all positives against the negatives; EXACT on the EXACT positives against the negatives and the edited copies
(an edited copy called EXACT is a false EXACT).

Fashion-MNIST (the 28 px ViTs): ``n_originals`` train images among a ``n_db``-image train database, ``n_distinct``
test images as distinct queries. Photos (extractors with a photo input): the bundled photos are the database and
the originals; no distinct queries (there are no other photos), so the negatives are the copies' wrong hits.

``vsearch calibrate --model NAME`` writes ``weights/<model>/calibration.json`` (export copies it beside the
model), and ``reports/calibration/README.md`` with ``<model>.png`` (score histograms, precision/recall curves)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from extractors.copies import ALL_LEVELS, EditLevel, apply_edit, level_rng
from extractors.datasets import load_fashion_mnist, load_photos
from extractors.imaging import array_to_model_input
from extractors.registry import committed_calibration, get_spec, load_extractor
from server.calibration import Calibration, Threshold, write

console = Console()
TARGET_PRECISION = 0.99
EXACT_JPEG_QUALITIES = (95, 85, 75)
EXACT_LEVELS = [EditLevel("identity", 0.0, "identity")] + [EditLevel("jpeg", float(q), f"jpeg_{q}")
                                                           for q in EXACT_JPEG_QUALITIES]
REPORT_DIR = Path(__file__).resolve().parent.parent / "reports" / "calibration"
BATCH = {"small": 500, "large": 32}


# ------------------------------------------------------------------------------------------- the threshold rule
@dataclass(frozen=True)
class Fit:
    threshold: float
    precision: float
    recall: float


def fit_threshold(positives: np.ndarray, negatives: np.ndarray, target: float = TARGET_PRECISION) -> Fit:
    """The lowest positive score ``t`` such that precision (1:1) >= ``target`` at ``t`` and at every higher
    positive score. No such score (a negative outscores the best positive): ``t`` just above the best score
    seen, recall 0."""
    pos = np.sort(np.asarray(positives, dtype=np.float64))[::-1]
    neg = np.sort(np.asarray(negatives, dtype=np.float64))
    if len(pos) == 0:
        raise ValueError("no positive pairs to fit on")
    best: Fit | None = None
    for t in np.unique(pos)[::-1]:
        tpr = float(np.mean(pos >= t))
        fpr = float(len(neg) - np.searchsorted(neg, t, side="left")) / max(len(neg), 1)
        precision = tpr / (tpr + fpr)
        if precision < target:
            break
        best = Fit(float(t), precision, tpr)
    if best is None:
        top = float(max(pos[0], neg[-1] if len(neg) else pos[0]))
        return Fit(min(float(np.nextafter(np.float32(top), np.float32(2.0))), 1.0), 1.0, 0.0)
    return best


def precision_recall(positives: np.ndarray, negatives: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """Precision (1:1) and recall at each threshold (for the curves)."""
    pos, neg = np.sort(positives), np.sort(negatives)
    tpr = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / len(pos)
    fpr = (len(neg) - np.searchsorted(neg, thresholds, side="left")) / max(len(neg), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tpr + fpr > 0, tpr / (tpr + fpr), 1.0)
    return precision, tpr


# ------------------------------------------------------------------------------------------------ the pairs
@dataclass
class Pairs:
    exact: np.ndarray  # scores of EXACT positives
    near: np.ndarray  # scores of every positive (graded levels and the EXACT ones)
    negatives: np.ndarray
    edited: np.ndarray  # the positives that are not EXACT: negatives of the EXACT fit
    per_level: dict[str, np.ndarray]  # positives' scores by level
    description: dict


class _Embedder:
    def __init__(self, name: str, size: int) -> None:
        self.model = load_extractor(name)
        self.size = size
        self.batch = BATCH["large" if size > 64 else "small"]

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            x = torch.from_numpy(np.stack([array_to_model_input(im, self.size) for im in images[i:i + self.batch]]))
            out.append(self.model(x).numpy())
        return np.concatenate(out).astype(np.float32)


def _edit_all(images: np.ndarray, sources: np.ndarray, levels: list[EditLevel], seed: int) -> list[list[np.ndarray]]:
    pils = [Image.fromarray(np.asarray(images[int(i)])) for i in sources]
    return [[np.asarray(apply_edit(p, lv, level_rng(seed, int(i), lv))) for i, p in zip(sources, pils, strict=True)]
            for lv in levels]


def build_pairs(name: str, dataset: str, n_db: int = 20_000, n_originals: int = 1_000, n_distinct: int = 1_000,
                seed: int = 0) -> Pairs:
    """The scored pairs of the module docstring for extractor ``name`` on ``dataset`` (fashion_mnist | photos)."""
    spec = get_spec(name)
    rng = np.random.default_rng(seed)
    if dataset == "fashion_mnist":
        train = load_fashion_mnist("train")
        db_images = train.images[:n_db]
        sources = np.sort(rng.choice(len(db_images), size=min(n_originals, len(db_images)), replace=False))
        test = load_fashion_mnist("test")
        distinct = list(test.images[np.sort(rng.choice(len(test), size=min(n_distinct, len(test)), replace=False))])
        embed = _Embedder(name, spec.input_size)
    elif dataset == "photos":
        if spec.photo_size is None:
            raise ValueError(f"{name} has no photo input")
        db_images = load_photos().images
        sources = np.arange(len(db_images))
        distinct = []
        embed = _Embedder(name, spec.photo_size)
    else:
        raise ValueError(f"unknown data set {dataset!r}: fashion_mnist or photos")
    t0 = time.perf_counter()
    db = embed(list(db_images))
    levels = EXACT_LEVELS + [lv for lv in ALL_LEVELS if lv.name != "identity"]
    edited = _edit_all(db_images, sources, levels, seed)
    per_level: dict[str, np.ndarray] = {}
    negatives: list[np.ndarray] = []
    dropped = 0
    for level, images in zip(levels, edited, strict=True):
        q = embed(images)
        scores = q @ db.T
        per_level[level.name] = scores[np.arange(len(sources)), sources]
        scores[np.arange(len(sources)), sources] = -np.inf
        wrong = np.argmax(scores, axis=1)
        identical = np.array([np.array_equal(db_images[w], db_images[o]) for w, o in zip(wrong, sources, strict=True)])
        dropped += int(identical.sum())
        negatives.append(scores[np.arange(len(sources)), wrong][~identical])
    if distinct:
        negatives.append(np.max(embed(distinct) @ db.T, axis=1))
    exact = np.concatenate([per_level[lv.name] for lv in EXACT_LEVELS])
    near = np.concatenate(list(per_level.values()))
    exact_names = {lv.name for lv in EXACT_LEVELS}
    edited_scores = np.concatenate([v for k, v in per_level.items() if k not in exact_names])
    console.print(f"{name} on {dataset}: {len(near)} positive pairs ({len(exact)} exact), "
                  f"{sum(len(n) for n in negatives)} negatives, {dropped} pixel-identical dropped, "
                  f"{time.perf_counter() - t0:.0f} s")
    description = {"dataset": dataset, "database": len(db_images), "originals": len(sources),
                   "levels": [lv.name for lv in levels], "exact_levels": [lv.name for lv in EXACT_LEVELS],
                   "distinct_queries": len(distinct), "positives": int(len(near)), "exact_positives": int(len(exact)),
                   "negatives": int(sum(len(n) for n in negatives)), "dropped_pixel_identical": dropped,
                   "seed": seed}
    return Pairs(exact, near, np.concatenate(negatives), edited_scores, per_level, description)


# ------------------------------------------------------------------------------------------------ fit + report
def fit(name: str, pairs: Pairs, target: float = TARGET_PRECISION) -> Calibration:
    near = fit_threshold(pairs.near, pairs.negatives, target)
    not_exact = np.concatenate([pairs.negatives, pairs.edited])
    exact = fit_threshold(pairs.exact, not_exact, target)
    if exact.threshold < near.threshold:  # EXACT must be the stricter verdict: its bound is never lower
        exact = _at(pairs.exact, not_exact, near.threshold)
    as32 = lambda x: float(np.float32(x))  # noqa: E731 - scores are float32 on the wire and in the store
    return Calibration(name, Threshold(as32(exact.threshold), round(exact.precision, 4), round(exact.recall, 4)),
                       Threshold(as32(near.threshold), round(near.precision, 4), round(near.recall, 4)), target,
                       datetime.now(UTC).isoformat(timespec="seconds"), pairs.description)


def _at(positives: np.ndarray, negatives: np.ndarray, t: float) -> Fit:
    precision, recall = precision_recall(positives, negatives, np.array([t]))
    return Fit(t, float(precision[0]), float(recall[0]))


def plot(name: str, pairs: Pairs, calibration: Calibration, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=72)
    bins = np.linspace(min(pairs.negatives.min(), pairs.near.min()), 1.0, 60)
    ax1.hist(pairs.negatives, bins=bins, alpha=0.6, density=True, label="negatives")
    ax1.hist(pairs.near, bins=bins, alpha=0.6, density=True, label="copies (all levels)")
    ax1.hist(pairs.exact, bins=bins, alpha=0.6, density=True, label="exact (re-encodes)")
    for t, c in ((calibration.near_duplicate.min_score, "k"), (calibration.exact.min_score, "r")):
        ax1.axvline(t, color=c, ls="--", lw=1)
    ax1.set_xlabel("cosine score")
    ax1.set_title(f"{name}: scores")
    ax1.legend(fontsize=7)
    ts = np.linspace(bins[0], 1.0, 400)
    not_exact = np.concatenate([pairs.negatives, pairs.edited])
    for label, positives, negatives in (("near-duplicate", pairs.near, pairs.negatives),
                                        ("exact", pairs.exact, not_exact)):
        p, r = precision_recall(np.sort(positives), np.sort(negatives), ts)
        ax2.plot(r, p, label=label)
    ax2.axhline(calibration.target_precision, color="grey", ls=":", lw=1)
    ax2.set_xlabel("recall")
    ax2.set_ylabel("precision (1:1)")
    ax2.set_ylim(0.5, 1.005)
    ax2.set_title("precision / recall")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def default_dataset(name: str) -> str:
    return "fashion_mnist" if get_spec(name).input_size <= 64 else "photos"


def calibrate(name: str, dataset: str | None = None, out: Path | None = None, report_dir: Path = REPORT_DIR,
              **pair_kwargs) -> tuple[Calibration, Pairs]:
    """Fit ``name``'s calibration, write it (default ``weights/<name>/calibration.json``), its PNG and the report."""
    pairs = build_pairs(name, dataset or default_dataset(name), **pair_kwargs)
    calibration = fit(name, pairs)
    write(calibration, out or committed_calibration(name))
    plot(name, pairs, calibration, report_dir / f"{name}.png")
    write_report(report_dir, calibration, pairs)
    return calibration, pairs


def write_report(report_dir: Path, calibration: Calibration, pairs: Pairs) -> Path:
    """``README.md``: one section per model, replaced when that model is recalibrated."""
    path = report_dir / "README.md"
    sections = _sections(path.read_text()) if path.exists() else {}
    c, d = calibration, pairs.description
    levels = sorted(pairs.per_level, key=lambda n: -float(np.mean(pairs.per_level[n] >= c.near_duplicate.min_score)))
    level_rows = "\n".join(f"| {n} | {np.mean(pairs.per_level[n]):.4f} | "
                           f"{np.mean(pairs.per_level[n] >= c.near_duplicate.min_score):.3f} | "
                           f"{np.mean(pairs.per_level[n] >= c.exact.min_score):.3f} |" for n in levels)
    sections[c.model] = f"""## {c.model}

Fitted {c.fitted_utc} on {d['dataset']}: {d['originals']} originals in a {d['database']}-image database,
{len(d['levels'])} levels ({d['positives']} positive pairs, {d['exact_positives']} of them exact:
{', '.join(d['exact_levels'])}), {d['negatives']} negatives ({d['distinct_queries']} distinct queries' best hits;
{d['dropped_pixel_identical']} pixel-identical "negatives" dropped as label noise). EXACT's negatives also include
the {d['positives'] - d['exact_positives']} edited copies.

| verdict | min score | precision (1:1) | recall |
|---|---|---|---|
| EXACT | {c.exact.min_score:.4f} | {c.exact.precision:.3f} | {c.exact.recall:.3f} |
| NEAR_DUPLICATE | {c.near_duplicate.min_score:.4f} | {c.near_duplicate.precision:.3f} | {c.near_duplicate.recall:.3f} |

![{c.model}]({c.model}.png)

<details><summary>Per level: mean score, share called NEAR_DUPLICATE or better, share called EXACT</summary>

| level | mean score | >= near-duplicate | >= exact |
|---|---|---|---|
{level_rows}

</details>
"""
    header = f"""# Calibrated verdicts

`vsearch calibrate --model NAME` (evaluation/calibration.py) fits, per model, the lowest cosine score called
`EXACT` and `NEAR_DUPLICATE`: the lowest score at which precision stays >= {c.target_precision} for every higher
threshold, positives and negatives weighted 1:1. Positives are (copy, original) at every graded level of
extractors/copies.py (EXACT: identity and JPEG re-encodes at quality {', '.join(map(str, EXACT_JPEG_QUALITIES))});
negatives are each copy's best-scoring database image that is not its original, plus distinct queries' best hits
(for EXACT, the edited copies are negatives too).
The thresholds live in `weights/<model>/calibration.json` and are copied beside the model by export; the gateway
gives every hit a verdict from them. Everything scoring below NEAR_DUPLICATE is SIMILAR.

"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(sections[k] for k in sorted(sections)))
    return path


def _sections(text: str) -> dict[str, str]:
    parts = text.split("\n## ")[1:]
    return {p.split("\n", 1)[0].strip(): "## " + p.rstrip() + "\n" for p in parts}
