"""Where self-supervision should win and where labels should, measured side by side (the representations
issue): graded near-duplicates, the semantic-bias experiment, label efficiency, transfer to digits no extractor
saw, and how much attention falls on the object. Each measurement is saved as ``OUT/<name>.json``; then
``OUT/headline.json`` (evaluation.headline) and the report section (evaluation.representations_report)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from evaluation import attention_on_object, label_efficiency, near_duplicates, semantic_bias, transfer
from evaluation.descriptors import CLS_GEM_WHITENED
from evaluation.headline import ROLES, build_headline, write_headline

console = Console()
FMNIST_EXTRACTORS = [ROLES["pixels"], "random_vit_femto_p7_fmnist", ROLES["dino"], ROLES["supervised"],
                     ROLES["supervised_coarse"]]
PHOTO_EXTRACTORS = [ROLES["pixels"], "efficientnet_lite0_imagenet"]
VITS = ["random_vit_femto_p7_fmnist", ROLES["dino"], ROLES["supervised"], ROLES["supervised_coarse"]]

MEASUREMENTS: dict[str, Callable[[bool], dict]] = {
    # The ViTs' main numbers use the descriptor they serve (extractors.descriptors); all three are compared too.
    "near_duplicates": lambda quick: near_duplicates.graded_near_duplicates(
        FMNIST_EXTRACTORS + PHOTO_EXTRACTORS[1:], quick=quick, descriptor=CLS_GEM_WHITENED),
    "semantic_bias": lambda quick: semantic_bias.semantic_bias(FMNIST_EXTRACTORS, quick=quick),
    "label_efficiency": lambda quick: label_efficiency.label_efficiency(quick=quick),
    "transfer_digits": lambda quick: transfer.transfer_digits(FMNIST_EXTRACTORS + PHOTO_EXTRACTORS[1:],
                                                              quick=quick),
    "attention_on_object": lambda quick: attention_on_object.attention_on_object(VITS, quick=quick),
}


def measure(out_dir: Path, quick: bool = False, only: list[str] | None = None) -> dict[str, dict]:
    """Runs the measurements (``only``: a subset; the others are read back from ``out_dir``) and saves each."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, run in MEASUREMENTS.items():
        path = out_dir / f"{name}.json"
        if only is not None and name not in only and path.exists():
            results[name] = json.loads(path.read_text())
            continue
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        results[name] = run(quick)
        results[name].setdefault("_wall_s", round(time.perf_counter() - t0, 1))
        path.write_text(json.dumps(results[name], indent=1))
    attention_on_object.save_attention_grid(out_dir / "figures" / "attention_on_object.png",
                                            [ROLES["dino"], ROLES["supervised"]])
    return results


def _numbers(d: dict, key: str | None = None) -> dict[str, float]:
    """``{name: value}`` of the extractors that were measured (skipped ones and ``_meta`` left out)."""
    out = {}
    for name, v in d.items():
        if name.startswith("_") or (isinstance(v, dict) and "skipped" in v):
            continue
        x = v if key is None else v.get(key) if isinstance(v, dict) else None
        if isinstance(x, int | float):
            out[name] = float(x)
    return out


def headline(results: dict[str, dict]) -> dict:
    sb = results["semantic_bias"]
    part = near_duplicates.headline_part(results["near_duplicates"])
    within = {name: v["within_group_knn20"]["mean"] for name, v in sb.items()
              if isinstance(v, dict) and "within_group_knn20" in v}
    le = {n: row for n, row in results["label_efficiency"].items() if isinstance(row, dict)
          and isinstance(row.get("dino_features"), float) and isinstance(row.get("trained_on_these_labels"), float)}
    return build_headline(knn20=_numbers(sb, "knn20"), near_duplicates=part["near_duplicates"],
                          geometric_levels=part["geometric_levels"], within_group_knn20=within, label_efficiency=le,
                          transfer_digits=_numbers(results["transfer_digits"]),
                          attention_on_object=_numbers(results["attention_on_object"], "fraction_on_object"))


def run(out_dir: Path, quick: bool = False, only: list[str] | None = None) -> dict:
    """Measures, writes ``headline.json`` and the report section; returns the headline."""
    from evaluation.representations_report import write_representations_report

    results = measure(out_dir, quick, only)
    h = headline(results)
    write_headline(h, out_dir)
    write_representations_report(results, h, out_dir)
    return h


def main(argv: list[str] | None = None) -> None:
    """``python -m evaluation.representations [--quick] [--only NAME ...] [--out DIR]``: the measurements named
    (default all; the others are read back from OUT), then headline.json and representations.md."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(MEASUREMENTS))
    p.add_argument("--out", type=Path, default=Path("reports/comparison"))
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    for t in run(a.out, a.quick, a.only)["targets"]:
        print(("met    " if t["met"] else "missed " if t["met"] is False else "n/a    ") + t["target"])


if __name__ == "__main__":
    main()
