"""Every extractor on a user's folder of images: what ``vsearch eval --images DIR`` measures and reports.

The same database for every extractor, and the whole of it (no subset for a slow one): the images are streamed
from disk and decoded in DataLoader workers, so memory holds the embeddings (N x D floats), never the pixels.

- **Graded copies** (needs no labels): ``n_sources`` database images drawn with a fixed seed, each edited once per
  level of ``extractors.copies`` (crop, shift, flip, rotation, JPEG, blur, brightness, contrast, noise, sticker,
  caption, strong); each edit queries the database, its original is the only target: R@1 per level, the mean over
  the geometric levels and over all edits.
- **Class retrieval** (class sub-folders): queries from ``queries`` (a second folder, e.g. a test split) or a seeded
  held-out fifth of the folder (at most ``max_queries``); 20-NN accuracy (weighted, T = 0.07), MAP@R, P@10 over the
  exact ranking of the whole database.
- **Label efficiency**: 20-NN accuracy when only 1, 10 or 100 database images per class carry their label.
- **Duplicates across the split**: queries whose 32 px grey pixels correlate >= ``DUPLICATE_CORRELATION`` with a
  database image's are near-identical files (the brain MRI set has them); class retrieval is reported with and
  without those queries, since a duplicate makes 1-NN trivial.

Extractors are registry names (``vsearch register`` adds trained ones) or ``random:NAME``, NAME's network at its
seeded random initialisation (the "no training" floor of that architecture).
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from evaluation.metrics import class_retrieval_metrics, copy_detection_metrics, search
from extractors.copies import ALL_LEVELS, QUICK_LEVEL_NAMES, apply_edit, geometric_level_names, get_level, level_rng
from extractors.datasets import FolderIndex, index_image_folder
from extractors.datasets.image_folder import read_rgb
from extractors.embedding import EmbeddingModel, ViTCLSEmbedding
from extractors.imaging import array_to_model_input
from extractors.registry import FeatureHead, get_spec, load_extractor
from extractors.training_data import DecodedFolder, collate_decoded

console = Console()
# Two files are the same picture (re-saved, re-scaled) when their 32 px grey pixels, each image centred on its own
# mean, correlate this well. Measured on the brain MRI set: the count of such test images plateaus at 471-479 of 1,311
# from 0.995 to 0.999, while uncentred cosine >= 0.99 also takes 250 distinct scans with black surroundings.
DUPLICATE_CORRELATION = 0.995
LABEL_BUDGETS = (1, 10, 100)
RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class FolderEvalConfig:
    n_sources: int = 100  # database images turned into graded copies (x 39 edit levels = the copy queries)
    max_queries: int = 5000  # held-out class-retrieval queries when no query folder is given
    quick: bool = False  # the quick edit levels and 100 sources: for tests and smoke runs
    seed: int = 0
    batch_size: int = 64
    workers: int = 1
    # Held-out queries by group, not by file: a regex whose first group names a file's group (GTSRB: the track,
    # r"^(\d+)_" of "00012_00029.png"), so no query has a near-duplicate frame of its own group in the database.
    group_pattern: str = ""


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def input_side(name: str) -> int:
    spec = get_spec(name.removeprefix(RANDOM_PREFIX))
    return spec.photo_size or spec.input_size


def load_model(name: str) -> nn.Module:
    """The extractor ``name`` (uint8 -> unit-norm embedding); ``random:NAME`` is NAME's network untrained."""
    if not name.startswith(RANDOM_PREFIX):
        return load_extractor(name)
    spec = get_spec(name.removeprefix(RANDOM_PREFIX))
    torch.manual_seed(0)
    net = spec.build().eval()
    body = FeatureHead(net) if spec.family == "cnn" else ViTCLSEmbedding(net)  # type: ignore[arg-type]
    return EmbeddingModel(body, spec.mean, spec.std).eval()


@torch.no_grad()
def embed_folder(model: nn.Module, index: FolderIndex, side: int, cfg: FolderEvalConfig, label: str,
                 progress: Progress | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings of every decodable image (float32 [M, D]) and the positions in ``index`` they belong to."""
    loader = DataLoader(DecodedFolder(index, side), batch_size=cfg.batch_size, num_workers=cfg.workers,
                        collate_fn=collate_decoded)
    task = progress.add_task(label, total=len(index)) if progress else None
    chunks, positions, start = [], [], 0
    for images, _, bad in loader:
        n = len(images) + len(bad)
        batch_positions = [p for p in range(start, start + n) if p not in set(bad)]
        if len(images):
            chunks.append(model(images).float())
            positions += batch_positions
        start += n
        if progress:
            progress.advance(task, n)
    return torch.cat(chunks), np.asarray(positions, dtype=np.int64)


def split_queries(db: FolderIndex, queries: Path | None, cfg: FolderEvalConfig) -> tuple[FolderIndex, FolderIndex]:
    """(database, queries): the whole folder and a second folder with the same class names, or a seeded held-out
    fifth of a labelled folder."""
    if queries is not None:
        q = index_image_folder(queries, require_images=True)
        names = {name: i for i, name in enumerate(db.classes)}
        relabel = np.array([names.get(c, -1) for c in q.classes] + [-1])
        q.labels = relabel[q.labels]
        q.classes = db.classes
        return db, q.subset(np.flatnonzero(q.labels >= 0))
    rng = np.random.default_rng(cfg.seed)
    labelled = np.flatnonzero(db.labels >= 0)
    n_q = min(cfg.max_queries, len(labelled) // 5)
    if cfg.group_pattern:
        groups = file_groups(db, cfg.group_pattern)
        q_idx = []
        for g in rng.permutation(sorted(set(groups[labelled]))):  # whole groups, until a fifth of the images
            if len(q_idx) >= n_q:
                break
            q_idx += [i for i in labelled if groups[i] == g]
        q_idx = np.sort(np.asarray(q_idx, dtype=np.int64))
    else:
        q_idx = np.sort(rng.permutation(labelled)[:n_q])
    rest = np.setdiff1d(np.arange(len(db)), q_idx)
    return db.subset(rest), db.subset(q_idx)


def file_groups(index: FolderIndex, pattern: str) -> np.ndarray:
    """Each file's group: its class folder plus the regex's first group on the file name (the whole name when the
    regex does not match: a group of its own)."""
    rx = re.compile(pattern)
    out = []
    for p in index.paths:
        m = rx.search(p.name)
        out.append(f"{p.parent.name}/{m.group(1) if m else p.name}")
    return np.asarray(out)


def copy_queries(db: FolderIndex, cfg: FolderEvalConfig) -> tuple[dict[str, list[np.ndarray]], np.ndarray]:
    """{level: [edited image, ...]} of ``n_sources`` seeded database images, and each source's database row."""
    n = min(100 if cfg.quick else cfg.n_sources, len(db))
    picked: dict[int, Image.Image] = {}
    for i in np.random.default_rng(cfg.seed + 1).permutation(len(db)):  # the first n decodable, in seeded order
        try:
            picked[int(i)] = Image.fromarray(read_rgb(db.paths[i]))
        except Exception:  # noqa: BLE001 - an undecodable file is no copy source (embed_folder skips it too)
            continue
        if len(picked) == n:
            break
    sources = np.array(sorted(picked), dtype=np.int64)
    originals = [picked[int(i)] for i in sources]
    levels = [get_level(n) for n in QUICK_LEVEL_NAMES] if cfg.quick else ALL_LEVELS
    edits = {lvl.name: [np.asarray(apply_edit(im, lvl, level_rng(cfg.seed, int(i), lvl)))
                        for i, im in zip(sources, originals, strict=True)] for lvl in levels}
    return edits, sources


@torch.no_grad()
def embed_arrays(model: nn.Module, images: list[np.ndarray], side: int, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack([array_to_model_input(a, side) for a in images[i:i + batch_size]]))
        out.append(model(x).float())
    return torch.cat(out)


def label_efficiency(db_emb, db_labels, q_emb, q_labels, seed: int) -> dict[str, float]:
    """20-NN accuracy with only n labelled database images per class (the same seeded images for everyone)."""
    from extractors.knn import knn_accuracy
    from extractors.training import labelled_subset

    out = {}
    for n in LABEL_BUDGETS:
        idx = labelled_subset(db_labels, n, seed)
        out[str(n)] = round(knn_accuracy(db_emb[idx], db_labels[idx], q_emb, q_labels, k=min(20, len(idx))), 4)
    return out


class CentredGrey(nn.Module):
    """uint8 [B, 3, S, S] -> the grey image centred on its own mean, unit norm: dot products are correlations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.float().mean(1).flatten(1)
        return F.normalize(g - g.mean(1, keepdim=True), dim=1, eps=1e-6)


def duplicate_queries(db: FolderIndex, q: FolderIndex, cfg: FolderEvalConfig) -> np.ndarray:
    """Positions of the queries that are near-identical files of a database image (32 px pixel correlation)."""
    pixels = CentredGrey()
    with _progress() as progress:
        db_emb, db_pos = embed_folder(pixels, db, 32, cfg, "pixels (duplicates)", progress)
        q_emb, q_pos = embed_folder(pixels, q, 32, cfg, "pixels (duplicate queries)", progress)
    sims, _ = search(q_emb, db_emb, 1)
    return q_pos[(sims[:, 0] >= DUPLICATE_CORRELATION).numpy()]


def evaluate_folder(images: Path, extractors: list[str], queries: Path | None = None,
                    cfg: FolderEvalConfig = FolderEvalConfig(), name: str = "") -> dict:
    """Every extractor on the folder (see the module docstring); the result is JSON-ready."""
    full = index_image_folder(images, require_images=True)
    labelled = full.labelled
    db, q = split_queries(full, queries, cfg) if labelled else (full, None)
    edits, sources = copy_queries(db, cfg)
    geometric = [n for n in geometric_level_names() if n in edits]
    duplicates = duplicate_queries(db, q, cfg) if q is not None else np.zeros(0, dtype=np.int64)
    result: dict = {
        "set": name or Path(images).name, "images": str(images), "queries": str(queries) if queries else None,
        "db_images": len(db), "query_images": len(q) if q is not None else 0, "classes": full.classes,
        "group_pattern": cfg.group_pattern or None, "copy_sources": len(sources), "levels": list(edits),
        "geometric_levels": geometric,
        "duplicate_queries": int(len(duplicates)), "duplicate_correlation": DUPLICATE_CORRELATION, "extractors": {},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "config": cfg.__dict__,
    }
    for ext in extractors:
        spec = get_spec(ext.removeprefix(RANDOM_PREFIX))
        side = input_side(ext)
        model = load_model(ext)
        entry: dict = {"input_size": side, "labels_used": bool(spec.labels_used and not ext.startswith(RANDOM_PREFIX)),
                       "trained_on": "nothing (random init)" if ext.startswith(RANDOM_PREFIX) else spec.trained_on,
                       "description": spec.description}
        with _progress() as progress:
            t0 = time.perf_counter()
            db_emb, db_pos = embed_folder(model, db, side, cfg, f"{ext}: database", progress)
            entry["embed_images_per_s"] = round(len(db_pos) / (time.perf_counter() - t0), 1)
            entry["skipped_files"] = len(db) - len(db_pos)
            q_emb = q_pos = None
            if q is not None:
                q_emb, q_pos = embed_folder(model, q, side, cfg, f"{ext}: queries", progress)
        row_of = {int(p): r for r, p in enumerate(db_pos)}
        targets = np.array([row_of.get(int(s), -1) for s in sources])
        per_level = {}
        for level, imgs in edits.items():
            m = copy_detection_metrics(embed_arrays(model, imgs, side, cfg.batch_size), targets, db_emb, k=10)
            per_level[level] = round(m["recall_at_1"], 4)
        edits_only = [v for k, v in per_level.items() if k != "identity"]
        entry["copies"] = {"recall_at_1": per_level,
                           "geometric_mean_r_at_1": round(float(np.mean([per_level[g] for g in geometric])), 4)
                           if geometric else None,
                           "mean_r_at_1": round(float(np.mean(edits_only)), 4)}
        if q is not None and q_emb is not None:
            db_labels, q_labels = db.labels[db_pos], q.labels[q_pos]
            entry["class_retrieval"] = _class_metrics(q_emb, q_labels, db_emb, db_labels)
            keep = ~np.isin(q_pos, duplicates)
            if (~keep).any():
                entry["class_retrieval_without_duplicates"] = _class_metrics(q_emb[keep], q_labels[keep], db_emb,
                                                                             db_labels)
            entry["label_efficiency_knn20"] = label_efficiency(db_emb, db_labels, q_emb, q_labels, cfg.seed)
        result["extractors"][ext] = entry
        console.print(f"[green]{ext}[/]: " + ", ".join(f"{k} {v}" for k, v in _summary(entry).items()))
    return result


def _class_metrics(q_emb, q_labels, db_emb, db_labels) -> dict:
    m = class_retrieval_metrics(q_emb, q_labels, db_emb, db_labels)
    return {"knn20": round(m["knn20_accuracy"], 4), "map_at_r": round(m["map_at_r"], 4),
            "precision_at_10": round(m["precision_at_10"], 4), "recall_at_1": round(m["recall_at_1"], 4)}


def _summary(entry: dict) -> dict:
    out = {"copies R@1 mean": entry["copies"]["mean_r_at_1"], "geometric": entry["copies"]["geometric_mean_r_at_1"]}
    if "class_retrieval" in entry:
        out.update({"20-NN": entry["class_retrieval"]["knn20"], "MAP@R": entry["class_retrieval"]["map_at_r"]})
    return out
