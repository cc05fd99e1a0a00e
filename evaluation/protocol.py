"""The comparison protocol: the same two tasks, the same seeds, every extractor.

Task 1, class retrieval on Fashion-MNIST: database = the 60k training images, queries = the 10k test images,
relevant = same class (MAP@R, precision@k, recall@1, weighted 20-NN; see ``evaluation.metrics``).

Task 2, copy detection on Fashion-MNIST: 1,000 test images (drawn with a fixed seed) are each turned into 3
strong copies (``CopyConfig.strong()``, seeded by ``make_copies``); the 3,000 copies are the queries, the
database is all 70k images (train + test): the 1,000 originals are the targets, the rest distractors.
Copies are made at 28x28 and then, like every database image, resized square to the extractor's input
(``extractors.imaging.array_to_model_input``, the gateway's resize: a no-op 28 -> 28 for the femto ViTs,
28 -> 224 for EfficientNet).

Task 2b, copy detection on the bundled real photos (39 photos, 3 strong copies each, database = the photos),
only for extractors made for photos (``ExtractorSpec.photo_size``: input >= 64 px, and the pixel floor).

``pixels`` is the raw-pixel floor, an extractor of the registry like the others: the L2-normalised grey image
(mean of the channels) at 28x28 for Fashion-MNIST and 32x32 for the photos.

Extractors that are too slow on CPU for the full sets (EfficientNet at 224 px: ~20-90 ms per image) run on a
smaller, documented subset (``SLOW_EXTRACTOR_SIZES``); the results record the sizes every number was
measured on. ``--quick`` shrinks everything (for tests and smoke runs).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from evaluation.metrics import class_retrieval_metrics, copy_detection_metrics, search
from evaluation.names import DEFAULT_OUT
from extractors.copies import CopyConfig, make_copies
from extractors.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist, load_photos
from extractors.imaging import array_to_model_input
from extractors.registry import PIXELS, get_spec, load_extractor

console = Console()
DEFAULT_EXTRACTORS = [PIXELS, "random_vit_femto_p7_fmnist", "dino_vit_femto_p7_fmnist",
                      "supervised_vit_femto_p7_fmnist", "efficientnet_lite0_imagenet"]
N_SAMPLE_QUERIES = 8  # test queries whose top neighbours are stored for the report's retrieval grids
SAMPLE_TOPK = 8
N_TSNE = 2000  # test embeddings stored for the report's t-SNE map


@dataclass(frozen=True)
class Sizes:
    """How many images each task uses (0 = all)."""

    db: int = 0  # Fashion-MNIST training images in the class-retrieval database (60k)
    queries: int = 0  # Fashion-MNIST test images used as class-retrieval queries (10k)
    copy_sources: int = 1000  # test images turned into copies
    copies_per_source: int = 3
    photos: bool = True  # run the photo copy-detection task (for extractors that take photos)


FULL = Sizes()
QUICK = Sizes(db=5000, queries=1000, copy_sources=200)
# EfficientNet at 224 px measured ~87 ms/image on one shared CPU thread here: 73k images would take ~1.8 h, so
# it gets 5k db / 1k queries / 300 copy sources (6.9k images to embed, ~10 min).
SLOW_EXTRACTOR_SIZES = {"efficientnet_lite0_imagenet": Sizes(db=5000, queries=1000, copy_sources=300)}


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def input_size(name: str, photos: bool = False) -> int:
    spec = get_spec(name)
    return (spec.photo_size or spec.input_size) if photos else spec.input_size


def takes_photos(name: str) -> bool:
    """Photos are only meaningful for extractors with a photo-sized input (not the 28 px Fashion-MNIST ViTs)."""
    return get_spec(name).photo_size is not None


def to_square_uint8(images, size: int) -> torch.Tensor:
    """A batch of HxW or HxWx3 uint8 arrays -> uint8 [B, 3, size, size], resized as the gateway does."""
    return torch.from_numpy(np.stack([array_to_model_input(im, size) for im in images]))


class Embedder:
    """``embed(images)``: unit-norm embeddings of a list/array of uint8 images for one extractor."""

    def __init__(self, name: str, batch_size: int = 0) -> None:
        self.name = name
        self.model = load_extractor(name)
        slow = get_spec(name).input_size > 64
        self.batch_size = batch_size or (32 if slow else 1000)
        self.seconds = 0.0
        self.count = 0

    @torch.no_grad()
    def embed(self, images, photos: bool = False, progress: Progress | None = None, label: str = "") -> torch.Tensor:
        size = input_size(self.name, photos)
        task = progress.add_task(label or self.name, total=len(images)) if progress else None
        chunks = []
        t0 = time.perf_counter()
        for i in range(0, len(images), self.batch_size):
            x = to_square_uint8(images[i:i + self.batch_size], size)
            chunks.append(self.model(x))
            if progress:
                progress.advance(task, len(x))
        self.seconds += time.perf_counter() - t0
        self.count += len(images)
        return torch.cat(chunks) if chunks else torch.zeros(0)


def make_copy_set(images, sources: np.ndarray, n: int, seed: int, size: int | None = None) -> tuple[list, np.ndarray]:
    """Strong copies of ``images[sources]`` (``n`` each, seeded per source index) and each copy's source position.

    ``size``: resize the copy square to this side (as the gateway would) - None keeps the copy's own size."""
    copies, which = [], []
    cfg = CopyConfig.strong()
    for pos, src in enumerate(sources):
        pil = Image.fromarray(np.asarray(images[src])).convert("RGB")
        for c in make_copies(pil, n, seed, cfg, item_index=int(src)):
            arr = np.asarray(c)
            copies.append(array_to_model_input(arr, size).transpose(1, 2, 0) if size else arr)
            which.append(pos)
    return copies, np.asarray(which, dtype=np.int64)


def _weights_info(name: str) -> dict:
    spec = get_spec(name)
    info = {"name": name, "description": spec.description, "labels_used": spec.labels_used,
            "trained_on": spec.trained_on, "dim": spec.dim, "input_size": spec.input_size, "family": spec.family}
    path = spec.weights()
    if path is not None and Path(path).exists():
        data = Path(path).read_bytes()
        info["weights"] = {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()[:16],
                           "modified_utc": datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).isoformat()}
    return info


def _subset(n_total: int, n: int) -> np.ndarray:
    return np.arange(n_total if not n else min(n, n_total))


def evaluate_extractor(name: str, sizes: Sizes, seed: int = 0, data: dict | None = None,
                       out_dir: Path | None = None) -> dict:
    """Both tasks for one extractor. ``data`` caches the loaded data sets and copies between extractors."""
    data = data if data is not None else {}
    if "train" not in data:
        data["train"], data["test"] = load_fashion_mnist("train"), load_fashion_mnist("test")
    train, test = data["train"], data["test"]
    db_idx, q_idx = _subset(len(train), sizes.db), _subset(len(test), sizes.queries)
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(len(q_idx), size=min(sizes.copy_sources, len(q_idx)), replace=False))
    key = ("fmnist_copies", len(q_idx), len(sources), sizes.copies_per_source, seed)
    if key not in data:
        data[key] = make_copy_set(test.images, q_idx[sources], sizes.copies_per_source, seed)
    copies, copy_src = data[key]

    result: dict = {"extractor": _weights_info(name), "sizes": asdict(sizes)}
    emb = Embedder(name)
    t_start = time.perf_counter()
    with _progress() as progress:
        db = emb.embed(train.images[db_idx], progress=progress, label=f"{name}: train (db)")
        qs = emb.embed(test.images[q_idx], progress=progress, label=f"{name}: test (queries)")
        cq = emb.embed(copies, progress=progress, label=f"{name}: copies")
        task = progress.add_task(f"{name}: class retrieval", total=len(qs))
        cls = class_retrieval_metrics(qs, test.labels[q_idx], db, train.labels[db_idx],
                                      progress=lambda n: progress.advance(task, n))
    cls.update(n_db=len(db), n_queries=len(qs))
    result["class_retrieval"] = cls
    # copy detection: database = train subset + test subset; target of a copy = its original's row
    copy_db = torch.cat([db, qs])
    targets = len(db) + q_idx[sources][copy_src]
    cd = copy_detection_metrics(cq, targets, copy_db)
    cd.update(n_db=len(copy_db), n_queries=len(cq), n_sources=len(sources))
    result["copy_detection_fmnist"] = cd
    result["embed_images_per_s"] = round(emb.count / max(emb.seconds, 1e-9), 1)

    # samples for the report: the neighbours of fixed test queries, and test embeddings for t-SNE
    sample_q = np.arange(min(N_SAMPLE_QUERIES, len(qs)))
    _, nn_idx = search(qs[sample_q], db, SAMPLE_TOPK)
    result["samples"] = {"query_test_index": q_idx[sample_q].tolist(), "neighbour_train_index":
                         db_idx[nn_idx.numpy()].tolist()}
    copy_q = np.arange(min(4, len(cq)))
    _, cnn = search(cq[copy_q], copy_db, 5)
    result["samples"]["copy_query_source_test_index"] = q_idx[sources][copy_src[copy_q]].tolist()
    result["samples"]["copy_neighbour_db_rows"] = cnn.tolist()
    if out_dir is not None:
        n_tsne = min(N_TSNE, len(qs))
        np.save(Path(out_dir) / f"tsne_input_{name}.npy", qs[:n_tsne].numpy().astype(np.float16))

    if sizes.photos and takes_photos(name):
        result["copy_detection_photos"] = photo_copy_detection(emb, seed, data)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return result


def photo_copy_detection(emb: Embedder, seed: int, data: dict) -> dict:
    if "photos" not in data:
        photos = load_photos()
        copies, src = make_copy_set(photos.images, np.arange(len(photos)), 3, seed)
        data["photos"] = (photos, copies, src)
    photos, copies, src = data["photos"]
    db = emb.embed(photos.images, photos=True, label=f"{emb.name}: photos")
    cq = emb.embed(copies, photos=True, label=f"{emb.name}: photo copies")
    out = copy_detection_metrics(cq, src, db, k=len(db))
    out.update(n_db=len(db), n_queries=len(cq), n_sources=len(photos))
    return out


def run_protocol(extractors: list[str] | None = None, quick: bool = False, out_dir: Path = DEFAULT_OUT,
                 seed: int = 0, sizes: Sizes | None = None, slow_sizes: dict[str, Sizes] | None = None) -> dict:
    """Runs both tasks for every extractor and writes ``out_dir/results.json``; returns the results.

    This is what ``vsearch eval [--quick] [--extractor NAME ...]`` calls. ``sizes`` overrides the sizes
    (default: full, or QUICK with ``quick``); ``slow_sizes`` the per-extractor subsets (ignored with quick)."""
    torch.manual_seed(seed)
    names = extractors or DEFAULT_EXTRACTORS
    for n in names:
        get_spec(n)  # fail early on a typo
    base = sizes or (QUICK if quick else FULL)
    slow = {} if quick else (SLOW_EXTRACTOR_SIZES if slow_sizes is None else slow_sizes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"meta": {"date_utc": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick, "seed": seed,
                        "sizes": asdict(base), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                        "machine": platform.processor() or platform.machine(),
                        "copy_config": asdict(CopyConfig.strong()), "classes": list(FASHION_MNIST_CLASSES)},
               "results": {}}
    data: dict = {}
    t0 = time.perf_counter()
    for name in names:
        s = slow.get(name, base)
        if name in slow:
            s = replace(s, photos=base.photos)
            console.print(f"[yellow]{name}: measured on a subset ({s.db} db / {s.queries} queries / "
                          f"{s.copy_sources} copy sources): too slow on CPU for the full sets[/]")
        try:
            res = evaluate_extractor(name, s, seed, data, out_dir)
        except FileNotFoundError as e:
            console.print(f"[red]skipping {name}: {e}[/]")
            continue
        results["results"][name] = res
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    subsets = {name: slow[name] for name in results["results"] if name in slow}
    if subsets:
        results["matched_subsets"] = matched_subset_comparisons(results["results"], subsets, seed, data)
    results["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print_tables(results)
    return results


def matched_subset_comparisons(results: dict, subsets: dict[str, Sizes], seed: int = 0,
                               data: dict | None = None) -> list[dict]:
    """Every other extractor again on each slow extractor's subset, so its numbers can be compared like for
    like (MAP@R and copy-detection scores depend on the database size). Photos are not re-run (same set)."""
    data = data if data is not None else {}
    out = []
    for slow_name, sizes in subsets.items():
        sizes = replace(sizes, photos=False)
        entry = {"subset_of": slow_name, "sizes": asdict(sizes), "results": {}}
        for name, res in results.items():
            if name == slow_name:
                entry["results"][name] = {k: res[k] for k in ("class_retrieval", "copy_detection_fmnist")}
                continue
            console.print(f"{name}: on {slow_name}'s subset for a like-for-like comparison")
            r = evaluate_extractor(name, sizes, seed, data)
            entry["results"][name] = {k: r[k] for k in ("class_retrieval", "copy_detection_fmnist")}
        out.append(entry)
    return out


def print_tables(results: dict) -> None:
    t1 = Table(title="Task 1: Fashion-MNIST class retrieval (test vs train)")
    for c in ("extractor", "db/queries", "MAP@R", "P@10", "R@1", "20-NN"):
        t1.add_column(c)
    t2 = Table(title="Task 2: copy detection (3 strong copies per source)")
    for c in ("extractor", "set", "db/queries", "R@1", "R@10", "mAP(1 target)", "micro-AP"):
        t2.add_column(c)
    for name, r in results["results"].items():
        c = r["class_retrieval"]
        t1.add_row(name, f"{c['n_db']}/{c['n_queries']}", f"{c['map_at_r']:.4f}", f"{c['precision_at_10']:.4f}",
                   f"{c['recall_at_1']:.4f}", f"{c['knn20_accuracy']:.4f}")
        for key, label in (("copy_detection_fmnist", "fmnist"), ("copy_detection_photos", "photos")):
            if key in r:
                d = r[key]
                t2.add_row(name, label, f"{d['n_db']}/{d['n_queries']}", f"{d['recall_at_1']:.4f}",
                           f"{d['recall_at_10']:.4f}", f"{d['map_single']:.4f}", f"{d['micro_ap']:.4f}")
    console.print(t1)
    console.print(t2)
