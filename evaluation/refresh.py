"""Re-measures some extractors and merges them into an existing ``results.json`` (e.g. after a checkpoint
is retrained), so the slow ones (EfficientNet at 224 px: ~11 min on 2 CPU cores) need not run again."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from evaluation.protocol import FULL, SLOW_EXTRACTOR_SIZES, evaluate_extractor, run_protocol

KEYS = ("class_retrieval", "copy_detection_fmnist")


def refresh_extractors(names: list[str], out_dir: Path, seed: int = 0) -> dict:
    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    results = json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        fresh = run_protocol(names, out_dir=Path(tmp), seed=seed, slow_sizes={})
        for f in Path(tmp).glob("tsne_input_*.npy"):
            f.replace(out_dir / f.name)
    for name in names:
        results["results"][name] = fresh["results"][name]
    for entry in results.get("matched_subsets", []):
        sizes = replace(SLOW_EXTRACTOR_SIZES.get(entry["subset_of"], FULL), photos=False)
        for name in names:
            r = evaluate_extractor(name, sizes, seed, {})
            entry["results"][name] = {k: r[k] for k in KEYS}
    results["meta"].setdefault("refreshed", []).append({"extractors": names, "date_utc": fresh["meta"]["date_utc"]})
    path.write_text(json.dumps(results, indent=1))
    return results
