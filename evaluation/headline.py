"""``reports/comparison/headline.json``: the few numbers the product's claim rests on, from the measurements.

Shape (NAME = a registry name; numbers are fractions in [0, 1]):
``{"roles": {"dino": NAME, "supervised": NAME, "supervised_coarse": NAME, "pixels": NAME},
"knn20": {NAME: acc}, "near_duplicates": {LEVEL: {NAME: r_at_1}}, "geometric_levels": [LEVEL, ...],
"within_group_knn20": {NAME: acc}, "label_efficiency_knn20": {"1": {"dino_features": acc,
"trained_on_these_labels": acc}, "10": {...}, "100": {...}}, "transfer_digits_knn": {NAME: acc},
"attention_on_object": {NAME: fraction}}``; plus ``targets``: each of the issue's targets with the measured
figures, the margin and whether it is met (computed here, never typed in)."""

from __future__ import annotations

import json
from pathlib import Path

from extractors.registry import PIXELS

ROLES = {"dino": "dino_vit_femto_p7_fmnist", "supervised": "supervised_vit_femto_p7_fmnist",
         "supervised_coarse": "supervised_coarse_vit_femto_p7_fmnist", "pixels": PIXELS}
LABEL_COUNTS = ("1", "10", "100")


def build_headline(knn20: dict[str, float], near_duplicates: dict[str, dict[str, float]],
                   geometric_levels: list[str], within_group_knn20: dict[str, float],
                   label_efficiency: dict[str, dict[str, float]], transfer_digits: dict[str, float],
                   attention_on_object: dict[str, float]) -> dict:
    headline = {
        "roles": dict(ROLES), "knn20": knn20, "near_duplicates": near_duplicates,
        "geometric_levels": list(geometric_levels), "within_group_knn20": within_group_knn20,
        "label_efficiency_knn20": {n: {"dino_features": label_efficiency[n]["dino_features"],
                                       "trained_on_these_labels": label_efficiency[n]["trained_on_these_labels"]}
                                   for n in LABEL_COUNTS if n in label_efficiency},
        "transfer_digits_knn": transfer_digits, "attention_on_object": attention_on_object,
    }
    check_shape(headline)
    headline["targets"] = targets(headline)
    return headline


def mean_geometric_r1(headline: dict, name: str) -> float | None:
    values = [headline["near_duplicates"][level].get(name) for level in headline["geometric_levels"]]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _target(what: str, measured: float | None, threshold: float | None) -> dict:
    if measured is None or threshold is None:
        return {"target": what, "measured": measured, "threshold": threshold, "met": None}
    return {"target": what, "measured": round(measured, 4), "threshold": round(threshold, 4),
            "margin": round(measured - threshold, 4), "met": measured >= threshold}


def _plus(x: float | None, d: float) -> float | None:
    return None if x is None else x + d


# The margins, in one place: the targets below and the learning curve's (evaluation.learning_curve) read them.
KNN20_FLOOR = 0.86
GEOMETRIC_MARGIN = 0.15  # over the supervised ViT
WITHIN_GROUP_MARGIN = 0.05  # over the supervised-coarse ViT
LABELS_10_MARGIN = 0.10  # over the ViT trained on those labels


def dino_thresholds(h: dict) -> dict[str, float | None]:
    """What each DINO number must reach, from the other sides' measured figures (None: not measured)."""
    r = h["roles"]
    return {"knn20": KNN20_FLOOR,
            "geometric_mean_r_at_1": _plus(mean_geometric_r1(h, r["supervised"]), GEOMETRIC_MARGIN),
            "within_group_knn20": _plus(h["within_group_knn20"].get(r["supervised_coarse"]), WITHIN_GROUP_MARGIN),
            "label_efficiency_10": _plus(h["label_efficiency_knn20"].get("10", {}).get("trained_on_these_labels"),
                                         LABELS_10_MARGIN)}


def targets(h: dict) -> list[dict]:
    """The issue's targets on the committed checkpoints, each with its margin (negative: missed by that much)."""
    r = h["roles"]
    dino, pix = r["dino"], r["pixels"]
    need = dino_thresholds(h)
    geo_dino = mean_geometric_r1(h, dino)
    return [
        _target("DINO 20-NN >= 0.86 (full 60k/10k)", h["knn20"].get(dino), need["knn20"]),
        _target("DINO 20-NN > pixels", h["knn20"].get(dino), h["knn20"].get(pix)),
        _target("DINO mean geometric R@1 >= supervised + 0.15", geo_dino, need["geometric_mean_r_at_1"]),
        _target("DINO mean geometric R@1 >= pixels", geo_dino, mean_geometric_r1(h, pix)),
        _target("within-group 20-NN: DINO >= supervised-coarse + 0.05", h["within_group_knn20"].get(dino),
                need["within_group_knn20"]),
        _target("10 labels per class: DINO features >= trained on those labels + 0.10",
                h["label_efficiency_knn20"].get("10", {}).get("dino_features"), need["label_efficiency_10"]),
        _target("digits transfer: DINO > supervised (fine)", h["transfer_digits_knn"].get(dino),
                _plus(h["transfer_digits_knn"].get(r["supervised"]), 1e-9)),
    ]


def check_shape(h: dict) -> None:
    """Every number is a fraction in [0, 1] and every name is a role's or a registry name (raises ValueError)."""
    def fraction(x: object, where: str) -> None:
        if not isinstance(x, int | float) or not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"headline {where}: {x!r} is not a fraction in [0, 1]")

    for key in ("knn20", "within_group_knn20", "transfer_digits_knn", "attention_on_object"):
        for name, v in h[key].items():
            fraction(v, f"{key}[{name}]")
    for level, row in h["near_duplicates"].items():
        for name, v in row.items():
            fraction(v, f"near_duplicates[{level}][{name}]")
    for level in h["geometric_levels"]:
        if level not in h["near_duplicates"]:
            raise ValueError(f"headline: geometric level {level!r} has no near-duplicate results")
    for n, row in h["label_efficiency_knn20"].items():
        for k, v in row.items():
            fraction(v, f"label_efficiency_knn20[{n}][{k}]")


def write_headline(headline: dict, out_dir: Path) -> Path:
    path = Path(out_dir) / "headline.json"
    path.write_text(json.dumps(headline, indent=1))
    return path
