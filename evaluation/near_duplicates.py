"""The graded near-duplicate protocol: one edit at a time, from barely visible to severe, every extractor.

The strong-copy task of ``evaluation.protocol`` applies several heavy edits at once to 28x28 images, and every
extractor sits at its floor there (R@1 ~0.001-0.006): it separates nothing. Here each query is ONE edit of one
kind at one strength (``extractors.copies.GRADED_LEVELS``: crop/zoom, translation, flip, rotation, JPEG, blur,
brightness, contrast, noise, sticker, caption), plus ``identity`` (no edit: the sanity check, R@1 must be 1.0
up to exact duplicates in the database; Fashion-MNIST has none) and ``strong`` (the old combined copy), so each
level shows where an extractor stops finding the original.

Fashion-MNIST: ``n_queries`` test images drawn with a fixed seed; every level is applied to each of them
(seeded per (seed, test index, level) by ``level_rng``); the database is all 70,000 images (60k train then 10k
test); a query's only target is its original's row. The edited image is resized square to the extractor's input
by the gateway's resize (``extractors.imaging.array_to_model_input``: a crop is thereby zoomed back to 28 px).

Photos: the 39 bundled real photos are the database, every level of every photo is a query, for extractors with
a photo input (``ExtractorSpec.photo_size``: the pixel floor at 32 px and EfficientNet at 224 px).

EfficientNet-Lite0 is left out of the Fashion-MNIST set: at 224 px it takes ~90 ms per image on one CPU
thread, and 70k database images plus ~39k queries would take ~2.7 hours. It is measured on the photo set, its
own domain.

Metrics per level (``evaluation.metrics.copy_detection_metrics``): R@1, R@10, mAP with the single target
(AP = 1 / rank of the target, 0 past the searched depth ``k``) and DISC21's micro-AP. ``geometric_levels`` are
the crop, translation, flip and rotation levels; each extractor also gets its mean R@1 over them.

For the ViTs, the three descriptors of DINO's own copy-detection evaluation (``evaluation.descriptors``: CLS,
CLS + GeM patch tokens, and that whitened on training images) are measured in the same run from the same
forward pass; the main table uses ``descriptor`` (default ``cls``: what is served).

``quick=True``: 100 queries, a 5,000-image database (4k train + the first 1k test images, the queries drawn
from those), the levels of ``QUICK_LEVEL_NAMES``: seconds, for tests and smoke runs.

``python -m evaluation.representations --only near_duplicates [--quick]`` runs it and saves the
JSON; ``headline_part(result)`` is the near-duplicate part of reports/comparison/headline.json.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from evaluation.descriptors import (
    CLS,
    CLS_GEM,
    CLS_GEM_WHITENED,
    DESCRIPTOR_DESCRIPTIONS,
    DESCRIPTORS,
    SERVED,
    DescriptorEmbedder,
)
from evaluation.metrics import copy_detection_metrics
from evaluation.semantic_bias import weights_missing
from extractors.copies import (
    ALL_LEVELS,
    GEOMETRIC_KINDS,
    QUICK_LEVEL_NAMES,
    EditLevel,
    apply_edit,
    geometric_level_names,
    get_level,
    level_rng,
)
from extractors.datasets import load_fashion_mnist, load_photos
from extractors.descriptors import PCAWhitening
from extractors.registry import PIXELS, get_spec

console = Console()
DEFAULT_EXTRACTORS = [PIXELS, "random_vit_femto_p7_fmnist", "dino_vit_femto_p7_fmnist",
                      "supervised_vit_femto_p7_fmnist", "supervised_coarse_vit_femto_p7_fmnist",
                      "efficientnet_lite0_imagenet"]
SEARCH_K = 100  # ranks searched on Fashion-MNIST: a target further down counts AP 0
N_WHITEN = 20_000  # training images the PCA whitening is learned on
QUICK_QUERIES = 100
QUICK_DB = (4000, 1000)  # (train, test) rows of the quick database


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def edited_queries(images, sources, levels: list[EditLevel], seed: int) -> dict[str, list[np.ndarray]]:
    """Every level applied to ``images[i]`` for each ``i`` in ``sources``: {level name: [uint8 array, ...]}.

    Query ``i`` of a level is seeded by ``level_rng(seed, i, level)``, so it does not depend on the other
    queries, levels or extractors."""
    out: dict[str, list[np.ndarray]] = {}
    pils = [Image.fromarray(np.asarray(images[int(i)])) for i in sources]
    for level in levels:
        out[level.name] = [np.asarray(apply_edit(pil, level, level_rng(seed, int(i), level)))
                           for i, pil in zip(sources, pils, strict=True)]
    return out


def _level_metrics(queries: torch.Tensor, targets: np.ndarray, db: torch.Tensor, k: int) -> dict:
    m = copy_detection_metrics(queries, targets, db, k=k)
    return {"recall_at_1": round(m["recall_at_1"], 4), "recall_at_10": round(m["recall_at_10"], 4),
            "map": round(m["map_single"], 4), "micro_ap": round(m["micro_ap"], 4)}


def _summary(per_level: dict[str, float], geometric: list[str]) -> dict:
    geo = [per_level[n] for n in geometric if n in per_level]
    edits = [v for n, v in per_level.items() if n != "identity"]
    return {"geometric_mean_r_at_1": round(float(np.mean(geo)), 4) if geo else None,
            "mean_r_at_1": round(float(np.mean(edits)), 4) if edits else None}


def _run_set(set_name: str, names: list[str], db_images, queries: dict[str, list], targets: np.ndarray,
             size_of, k: int, geometric: list[str], descriptor: str, descriptor_names: set[str],
             whiten_rows: np.ndarray | None) -> tuple[dict, dict]:
    """One data set for every extractor: (main results, descriptor comparison) keyed by extractor name."""
    results: dict = {}
    compared: dict = {}
    for name in names:
        compare = name in descriptor_names
        ext = DescriptorEmbedder(name)  # a ViT: one pass gives every descriptor
        size = size_of(name)
        t0 = time.perf_counter()
        with _progress() as progress:
            db = ext.embed(db_images, size, progress, f"{name}: {set_name} database")
            whitening = None
            if CLS_GEM in db and whiten_rows is not None:
                whitening = PCAWhitening.fit(db[CLS_GEM][torch.from_numpy(whiten_rows)])
                db[CLS_GEM_WHITENED] = whitening.transform(db[CLS_GEM])
            main_key = descriptor if descriptor in db else (CLS if CLS in db else SERVED)
            levels_out: dict[str, dict] = {}
            per_desc: dict[str, dict[str, float]] = {d: {} for d in DESCRIPTORS if d in db}
            task = progress.add_task(f"{name}: {set_name} levels", total=len(queries))
            for level_name, images in queries.items():
                q = ext.embed(images, size)
                if whitening is not None:
                    q[CLS_GEM_WHITENED] = whitening.transform(q[CLS_GEM])
                levels_out[level_name] = _level_metrics(q[main_key], targets, db[main_key], k)
                if compare:
                    for d in per_desc:
                        per_desc[d][level_name] = (levels_out[level_name]["recall_at_1"] if d == main_key else
                                                   _level_metrics(q[d], targets, db[d], k)["recall_at_1"])
                progress.advance(task)
        r1 = {n: v["recall_at_1"] for n, v in levels_out.items()}
        results[name] = {"descriptor": main_key, "levels": levels_out, **_summary(r1, geometric),
                         "embed_images_per_s": round(ext.count / max(ext.seconds, 1e-9), 1),
                         "wall_s": round(time.perf_counter() - t0, 1)}
        if compare:
            compared[name] = {d: {"levels": v, **_summary(v, geometric)} for d, v in per_desc.items()}
        console.print(f"{name} ({set_name}): geometric R@1 {results[name]['geometric_mean_r_at_1']}, "
                      f"mean R@1 {results[name]['mean_r_at_1']}, identity "
                      f"{levels_out.get('identity', {}).get('recall_at_1')}, {results[name]['wall_s']} s")
    return results, compared


def _best_descriptors(compared: dict) -> dict:
    best = {}
    for name, per in compared.items():
        best[name] = {key: max(per, key=lambda d, key=key: per[d][key] if per[d][key] is not None else -1)
                      for key in ("geometric_mean_r_at_1", "mean_r_at_1")}
    if compared:
        overall = {d: float(np.mean([per[d]["mean_r_at_1"] for per in compared.values()]))
                   for d in DESCRIPTORS if all(d in per for per in compared.values())}
        best["overall_by_mean_r_at_1"] = max(overall, key=overall.__getitem__) if overall else None
    return best


def graded_near_duplicates(extractors: list[str] | None = None, n_queries: int = 1000, seed: int = 0,
                           quick: bool = False, descriptor: str = CLS, levels: list[str] | None = None,
                           compare_descriptors: list[str] | bool = True, photos: bool = True,
                           n_whiten: int = N_WHITEN, k: int = SEARCH_K) -> dict:
    """Runs the graded protocol (see the module docstring) and returns a JSON-able dict.

    ``descriptor``: what the ViTs' main numbers use (``cls``, ``cls_gem4``, or ``cls_gem4_whitened``: what our
    ViTs serve, with the whitening learned here on the same recipe as ``vsearch fit-whitening``).
    ``compare_descriptors``: True = measure all three descriptors for every ViT in ``extractors``; a list = for
    those names; False = none. ``levels``: level names (default: all, or ``QUICK_LEVEL_NAMES`` with ``quick``).

    Shape: ``{"meta", "levels": [{name, kind, strength}], "level_names", "geometric_levels",
    "fashion_mnist": {n_db, n_queries_per_level, ..., "results": {NAME: {"descriptor", "levels": {LEVEL:
    {recall_at_1, recall_at_10, map, micro_ap}}, "geometric_mean_r_at_1", "mean_r_at_1", ...}}},
    "photos": {same}, "skipped": {"fashion_mnist": {NAME: why}, "photos": {NAME: why}},
    "descriptors": {"descriptions", "whitening", "fashion_mnist": {NAME: {DESCRIPTOR: {"levels": {LEVEL: r_at_1},
    "geometric_mean_r_at_1", "mean_r_at_1"}}}, "best": {NAME: {by summary: DESCRIPTOR}}}}``."""
    if descriptor not in DESCRIPTORS:
        raise ValueError(f"descriptor must be one of {DESCRIPTORS}")
    names = list(extractors or DEFAULT_EXTRACTORS)
    for n in names:
        get_spec(n)  # fail early on a typo
    chosen = [get_level(n) for n in (levels or (QUICK_LEVEL_NAMES if quick else [lv.name for lv in ALL_LEVELS]))]
    geometric = geometric_level_names(chosen)
    if quick:
        n_queries = min(n_queries, QUICK_QUERIES)
    t_start = time.perf_counter()
    skipped: dict[str, dict[str, str]] = {"fashion_mnist": {}, "photos": {}}
    available = []
    for n in names:
        why = weights_missing(n)
        if why:
            skipped["fashion_mnist"][n] = skipped["photos"][n] = why
            console.print(f"[yellow]skipping {n}: {why}[/]")
        else:
            available.append(n)
    if compare_descriptors is True:
        descriptor_names = {n for n in available if get_spec(n).family == "vit"}
    else:
        descriptor_names = {n for n in (compare_descriptors or []) if n in available and get_spec(n).family == "vit"}

    result: dict = {
        "meta": {"date_utc": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick, "seed": seed,
                 "n_queries": n_queries, "search_k": k, "descriptor": descriptor, "torch": torch.__version__,
                 "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                 "extractors": names},
        "levels": [{"name": lv.name, "kind": lv.kind, "strength": lv.strength} for lv in chosen],
        "level_names": [lv.name for lv in chosen],
        "geometric_kinds": list(GEOMETRIC_KINDS),
        "geometric_levels": geometric,
        "skipped": skipped,
    }

    # --- Fashion-MNIST: database = train + test, queries = edited test images --------------------------------
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    n_train_db, n_test_db = QUICK_DB if quick else (len(train), len(test))
    db_images = np.concatenate([train.images[:n_train_db], test.images[:n_test_db]])
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(n_test_db, size=min(n_queries, n_test_db), replace=False))
    targets = n_train_db + sources
    whiten_rows = np.sort(np.random.default_rng([seed, 1]).choice(n_train_db, size=min(n_whiten, n_train_db),
                                                                  replace=False))
    fm_names = []
    for n in available:
        if get_spec(n).input_size > DescriptorEmbedder.SLOW_INPUT_SIDE:
            skipped["fashion_mnist"][n] = (f"{get_spec(n).input_size} px input: ~90 ms per image on one CPU thread, "
                                           "the 70k database and the queries would take hours; measured on the "
                                           "photo set only")
        else:
            fm_names.append(n)
    fm: dict = {"n_db": len(db_images), "n_train_db": n_train_db, "n_test_db": n_test_db,
                "n_queries_per_level": len(sources), "query_test_index_first": sources[:10].tolist(), "results": {}}
    compared: dict = {}
    if fm_names:
        t0 = time.perf_counter()
        queries = edited_queries(test.images, sources, chosen, seed)
        console.print(f"Fashion-MNIST: {len(chosen)} levels x {len(sources)} queries edited in "
                      f"{time.perf_counter() - t0:.1f} s; database {len(db_images)}")
        fm["results"], compared = _run_set("fashion_mnist", fm_names, db_images, queries, targets,
                                           lambda n: get_spec(n).input_size, k, geometric, descriptor,
                                           descriptor_names, whiten_rows)
    result["fashion_mnist"] = fm

    # --- photos: database = the photos, queries = every level of every photo ----------------------------------
    if photos:
        photo_names = []
        for n in available:
            if get_spec(n).photo_size is None:
                skipped["photos"][n] = f"{get_spec(n).input_size} px input: not made for photos"
            else:
                photo_names.append(n)
        ph: dict = {"results": {}}
        if photo_names:
            data = load_photos()
            idx = np.arange(len(data))
            queries = edited_queries(data.images, idx, chosen, seed)
            ph.update(n_db=len(data), n_queries_per_level=len(idx))
            ph["results"], _ = _run_set("photos", photo_names, data.images, queries, idx,
                                        lambda n: get_spec(n).photo_size, len(data), geometric, descriptor,
                                        set(), None)
        result["photos"] = ph

    result["descriptors"] = {
        "descriptions": dict(DESCRIPTOR_DESCRIPTIONS),
        "whitening": {"fit_on": "seeded Fashion-MNIST train images (database rows), never the test queries",
                      "n": len(whiten_rows)},
        "fashion_mnist": compared,
        "best": _best_descriptors(compared),
    }
    result["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    return result


def headline_part(result: dict, dataset: str = "fashion_mnist") -> dict:
    """The near-duplicate part of headline.json: ``{"near_duplicates": {LEVEL: {NAME: r_at_1}},
    "geometric_levels": [LEVEL, ...]}`` (levels in protocol order, extractors that were measured)."""
    per_name = result.get(dataset, {}).get("results", {})
    table = {level: {name: r["levels"][level]["recall_at_1"] for name, r in per_name.items() if level in r["levels"]}
             for level in result["level_names"]}
    return {"near_duplicates": table, "geometric_levels": list(result["geometric_levels"])}


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path


def print_tables(result: dict) -> None:
    for dataset in ("fashion_mnist", "photos"):
        per_name = result.get(dataset, {}).get("results", {})
        if not per_name:
            continue
        table = Table(title=f"Graded near-duplicates, {dataset}: R@1 per level "
                            f"(db {result[dataset]['n_db']}, {result[dataset]['n_queries_per_level']} queries/level)")
        table.add_column("level")
        for name in per_name:
            table.add_column(name)
        for level in result["level_names"]:
            table.add_row(level, *(f"{r['levels'][level]['recall_at_1']:.3f}" for r in per_name.values()))
        for key in ("geometric_mean_r_at_1", "mean_r_at_1"):
            table.add_row(key, *(f"{r[key]:.3f}" if r[key] is not None else "-" for r in per_name.values()))
        console.print(table)
    compared = result["descriptors"]["fashion_mnist"]
    if compared:
        table = Table(title="Descriptors (Fashion-MNIST): mean R@1")
        for c in ("extractor", "descriptor", "geometric", "all edits"):
            table.add_column(c)
        for name, per in compared.items():
            for d, v in per.items():
                table.add_row(name, d, f"{v['geometric_mean_r_at_1']:.3f}", f"{v['mean_r_at_1']:.3f}")
        console.print(table)
        console.print(f"best descriptor: {result['descriptors']['best']}")
    for dataset, why in result["skipped"].items():
        for name, reason in why.items():
            console.print(f"[yellow]{dataset}: {name} skipped: {reason}[/]")
