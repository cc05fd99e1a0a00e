"""The comparison report: ``reports/comparison/report.md`` and ``report.html`` from ``results.json``.

Tables, bar charts, precision-recall curves, a t-SNE map of test embeddings, retrieval grids for the same
queries across extractors, and attention / Grad-CAM galleries. Every sentence about who wins is generated
from the measured numbers in ``results.json``; nothing is written in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.document import Doc
from evaluation.names import DEFAULT_OUT
from extractors.imaging import array_to_model_input
from extractors.registry import PIXELS

CLASS_METRICS = [("map_at_r", "MAP@R"), ("map", "mAP"), ("precision_at_10", "P@10"), ("recall_at_1", "R@1 (1-NN)"),
                 ("knn20_accuracy", "weighted 20-NN acc")]
COPY_METRICS = [("recall_at_1", "R@1"), ("recall_at_10", "R@10"), ("map_single", "mAP (1 target)"),
                ("micro_ap", "micro-AP")]
SHORT = {PIXELS: "pixels", "random_vit_femto_p7_fmnist": "random ViT", "dino_vit_femto_p7_fmnist": "DINO ViT",
         "supervised_vit_femto_p7_fmnist": "supervised ViT", "efficientnet_lite0_imagenet": "EfficientNet (ImageNet)"}


def short(name: str) -> str:
    return SHORT.get(name, name)


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _size_note(r: dict, task: str) -> str:
    d = r[task]
    return f"{d['n_db']:,} db / {d['n_queries']:,} queries"


def compare_sentence(results: dict, task: str, metric: str, label: str, task_name: str) -> str | None:
    """'X wins <task> on <metric> with a, ahead of Y (b): +d (r x).' from the numbers; subsets flagged."""
    rows = [(n, r[task][metric], r) for n, r in results.items() if task in r]
    if len(rows) < 2:
        return None
    rows.sort(key=lambda t: -t[1])
    (w, wv, _), (s, sv, _) = rows[0], rows[1]
    ratio = f", {wv / sv:.2f}x" if sv > 0 else ""
    text = (f"**{short(w)}** wins {task_name} on {label} with {_fmt(wv)}, ahead of {short(s)} ({_fmt(sv)}): "
            f"+{wv - sv:.3f} absolute{ratio}.")
    notes = [_size_note(r, task) for _, _, r in rows]
    common = max(set(notes), key=notes.count)
    odd = [f"{short(n)} on {note}" for (n, _, _), note in zip(rows, notes, strict=True) if note != common]
    if odd:
        text += (f" Caveat: {', '.join(odd)} (the others on {common}); see the like-for-like table on the "
                 "same subset below.")
    last_n, last_v, _ = rows[-1]
    text += f" Last: {short(last_n)} ({_fmt(last_v)})."
    return text


def gap_sentence(results: dict, task: str, metric: str, label: str) -> str | None:
    """How much of the supervised ViT's gain over the random ViT DINO recovers without labels."""
    names = ("dino_vit_femto_p7_fmnist", "supervised_vit_femto_p7_fmnist", "random_vit_femto_p7_fmnist")
    if not all(n in results and task in results[n] for n in names):
        return None
    d, s, r = (results[n][task][metric] for n in names)
    if abs(s - r) < 1e-9:
        return None
    frac = (d - r) / (s - r)
    verb = "beats" if d > s else "trails"
    return (f"On {label}, the DINO ViT (no labels, {_fmt(d)}) {verb} the supervised ViT ({_fmt(s)}) by "
            f"{abs(d - s):.3f}; measured from the random ViT ({_fmt(r)}), DINO covers {frac * 100:.0f}% of the "
            "supervised ViT's gain.")


def floor_sentence(results: dict, task: str, metric: str, label: str) -> str | None:
    if PIXELS not in results or task not in results[PIXELS]:
        return None
    p = results[PIXELS][task][metric]
    others = [n for n, r in results.items() if n != PIXELS and task in r]
    below = [short(n) for n in others if results[n][task][metric] < p]
    if not others:
        return None
    if not below:
        return f"Every learned extractor is above the raw-pixel floor on {label} ({_fmt(p)})."
    return f"Below the raw-pixel floor on {label} ({_fmt(p)}): {', '.join(below)}."


# --- figures -----------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(results: dict, task: str, metrics: list[tuple[str, str]], path: Path, title: str) -> bool:
    names = [n for n, r in results.items() if task in r]
    if not names:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * len(names) / 3), 3.6))
    width = 0.8 / len(names)
    x = np.arange(len(metrics))
    for i, n in enumerate(names):
        vals = [results[n][task][m] for m, _ in metrics]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=short(n))
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(x, [lbl for _, lbl in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncols=min(5, len(names)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pr_chart(results: dict, tasks: list[tuple[str, str]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, (task, title) in zip(axes[0], tasks, strict=True):
        for n, r in results.items():
            if task in r:
                c = r[task]["pr_curve"]
                ax.plot(c["recall"], c["precision"], marker="." if len(c["recall"]) < 30 else None, label=short(n))
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tsne_chart(results: dict, out_dir: Path, path: Path, classes: list[str]) -> list[str]:
    from sklearn.manifold import TSNE

    from extractors.datasets import load_fashion_mnist

    labels_all = load_fashion_mnist("test").labels
    done = [n for n in results if (out_dir / f"tsne_input_{n}.npy").exists()]
    if not done:
        return []
    plt = _plt()
    cols = min(3, len(done))
    rows = -(-len(done) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    cmap = plt.get_cmap("tab10")
    for ax, n in zip(axes.flat, done, strict=False):
        x = np.load(out_dir / f"tsne_input_{n}.npy").astype(np.float32)
        y = labels_all[:len(x)]
        xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(x)
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(c)) for c in y], s=3)
        ax.set_title(f"{short(n)} ({len(x)} test images)", fontsize=9)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=c) for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncols=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return done


def _tile(img: np.ndarray, border: tuple[int, int, int] | None, size: int = 28, pad: int = 2) -> np.ndarray:
    """A grey or RGB image as an RGB tile of ``size`` px with a coloured ``pad``-px border (white = none)."""
    tile = np.full((size + 2 * pad, size + 2 * pad, 3), 255, np.uint8)
    if border:
        tile[:] = border
    tile[pad:pad + size, pad:pad + size] = array_to_model_input(img, size).transpose(1, 2, 0)
    return tile


def _mosaic(rows: list[list[np.ndarray]], labels: list[str], path: Path, title: str, gap_after: int = 1) -> None:
    """One image of rows of tiles (a blank column after the first ``gap_after`` tiles), labelled on the left."""
    blank = np.full_like(rows[0][0], 255)
    lines = [np.concatenate(r[:gap_after] + [blank[:, :8]] + r[gap_after:], axis=1) for r in rows]
    grid = np.concatenate(lines, axis=0)
    plt = _plt()
    h, w = grid.shape[:2]
    fig, ax = plt.subplots(figsize=(w / 40 + 1.6, h / 40 + 0.4))
    ax.imshow(grid, interpolation="nearest")
    th = rows[0][0].shape[0]
    ax.set_yticks([th * (i + 0.5) for i in range(len(rows))], labels, fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


GREEN, RED, GREY = (40, 200, 40), (220, 40, 40), (200, 200, 200)


def retrieval_grid(results: dict, path: Path, n_queries: int = 4) -> bool:
    from extractors.datasets import load_fashion_mnist

    names = [n for n, r in results.items() if "samples" in r]
    if not names:
        return False
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    q_ids = results[names[0]]["samples"]["query_test_index"][:n_queries]
    rows, labels = [], []
    for qi, q in enumerate(q_ids):
        for n in names:
            nn = results[n]["samples"]["neighbour_train_index"][qi]
            rows.append([_tile(test.images[q], None)] + [
                _tile(train.images[t], GREEN if train.labels[t] == test.labels[q] else RED) for t in nn])
            labels.append(short(n))
    _mosaic(rows, labels, path, "query (left), then its top neighbours in the training set: "
            "green = same class, red = another class")
    return True


def copy_grid(results: dict, meta: dict, path: Path) -> bool:
    """Copies (queries) and their top database hits: green = the original."""
    from PIL import Image

    from extractors.copies import CopyConfig, make_copies
    from extractors.datasets import load_fashion_mnist

    names = [n for n, r in results.items() if "copy_query_source_test_index" in r.get("samples", {})]
    if not names:
        return False
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    per = meta["sizes"]["copies_per_source"]
    srcs = results[names[0]]["samples"]["copy_query_source_test_index"]
    rows, labels = [], []
    for i, src in enumerate(srcs):
        copy = make_copies(Image.fromarray(test.images[src]).convert("RGB"), per, meta["seed"], CopyConfig.strong(),
                           item_index=int(src))[i % per]
        for n in names:
            n_db = results[n]["class_retrieval"]["n_db"]
            row = [_tile(test.images[src], None), _tile(np.asarray(copy), None)]
            for dbrow in results[n]["samples"]["copy_neighbour_db_rows"][i]:
                img = train.images[dbrow] if dbrow < n_db else test.images[dbrow - n_db]
                row.append(_tile(img, GREEN if dbrow >= n_db and dbrow - n_db == src else GREY))
            rows.append(row)
            labels.append(short(n))
    _mosaic(rows, labels, path, "original, its strong copy (the query), then the top database hits: "
            "green = the original", gap_after=2)
    return True


def explain_gallery(results: dict, out_dir: Path, n_images: int = 3) -> list[Path]:
    from evaluation.explain import explain, explainable
    from extractors.datasets import load_fashion_mnist, load_photos

    test = load_fashion_mnist("test")
    gallery = out_dir / "explain"
    paths: list[Path] = []
    q_ids = next(iter(results.values()))["samples"]["query_test_index"][:n_images]
    for n in results:
        if not explainable(n):
            continue
        for q in q_ids:
            paths += explain(test.images[q], n, gallery, stem=f"fmnist-test-{q:05d}")
        if n == "efficientnet_lite0_imagenet":
            photos = load_photos()
            for i in range(min(n_images, len(photos))):
                pid = photos.ids[i].replace("/", "_").rsplit(".", 1)[0]
                paths += explain(photos.images[i], n, gallery, stem=f"photo-{pid}")
    return paths


# --- the report --------------------------------------------------------------------------------------------

def write_report(out_dir: Path = DEFAULT_OUT, explain_images: bool = True, tsne: bool = True) -> Path:
    """Reads ``out_dir/results.json``, writes ``out_dir/report.md``, ``report.html`` and ``figures/``."""
    out_dir = Path(out_dir)
    data = json.loads((out_dir / "results.json").read_text())
    meta, results = data["meta"], data["results"]
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    doc = Doc()
    doc.h(1, "Self-supervised vs supervised vs pre-trained: the comparison")
    doc.p(f"Measured {meta['date_utc']} (seed {meta['seed']}, {'quick mode, ' if meta['quick'] else ''}"
          f"torch {meta['torch']}, {meta['torch_threads']} CPU thread(s); total {meta.get('wall_s', '?')} s). "
          "Exact cosine search (brute force) over L2-normalised embeddings. Numbers come from `results.json`; "
          "the sentences below are generated from them.")
    if (Path(out_dir) / "representations.md").exists():
        doc.p("Graded near-duplicates, the semantic-bias experiment, label efficiency, transfer to digits and "
              "attention on the object: [representations.md](representations.md) (and `headline.json`).")

    doc.h(2, "Extractors")
    rows = []
    for n, r in results.items():
        e = r["extractor"]
        w = e.get("weights", {})
        rows.append([short(n), f"`{n}`", "yes" if e["labels_used"] else "no", e["trained_on"], str(e["dim"]),
                     str(e["input_size"]), f"{r['embed_images_per_s']:.0f}",
                     f"{w.get('sha256', '-')} ({w.get('modified_utc', '-')[:16]})" if w else "-"])
    doc.table(["extractor", "registry name", "labels", "trained on", "dim", "input px", "images/s (CPU)",
               "weights sha256 (mtime)"], rows)

    doc.h(2, "Task 1: class retrieval on Fashion-MNIST")
    doc.p("Queries: test images; database: training images; relevant = same class. MAP@R (Musgrave et al. "
          "2020: R = number of same-class database images), mAP over the full ranking, precision@10, recall@1 "
          "(= 1-NN accuracy) and DINO's weighted 20-NN accuracy (T = 0.07).")
    doc.table(["extractor", "db / queries"] + [lbl for _, lbl in CLASS_METRICS],
              [[short(n), _size_note(r, "class_retrieval")] + [_fmt(r["class_retrieval"][m]) for m, _ in CLASS_METRICS]
               for n, r in results.items()])
    sentences = [compare_sentence(results, "class_retrieval", m, lbl, "class retrieval")
                 for m, lbl in CLASS_METRICS[:1] + CLASS_METRICS[3:5]]
    sentences += [gap_sentence(results, "class_retrieval", "map_at_r", "MAP@R"),
                  gap_sentence(results, "class_retrieval", "knn20_accuracy", "20-NN accuracy"),
                  floor_sentence(results, "class_retrieval", "map_at_r", "MAP@R")]
    doc.bullets([s for s in sentences if s])
    if bar_chart(results, "class_retrieval", CLASS_METRICS, fig_dir / "class_retrieval_bars.png",
                 "Task 1: Fashion-MNIST class retrieval"):
        doc.img("figures/class_retrieval_bars.png", "class retrieval bar chart")

    doc.h(2, "Task 2: copy detection")
    copies = meta["sizes"]["copies_per_source"]
    doc.p(f"Each source image gets {copies} strong copies (crop to 50-90% of the area, rotation, mirror, colour "
          "jitter, blur, caption, sticker, JPEG quality 15-40; seeded). The copies are the queries; the only "
          "relevant item is the original. Fashion-MNIST: database = train + test images (originals + "
          "distractors), copies made at 28x28 and resized to each extractor's input. Photos: the bundled real "
          "photos, only for extractors made for photos and the pixel floor. mAP (1 target) is the mean AP with "
          "the single relevant item (= mean reciprocal rank, 0 past the top 100); micro-AP is DISC21's: all "
          "top-10 (query, candidate) pairs pooled and ranked by similarity.")
    for task, set_name in (("copy_detection_fmnist", "Fashion-MNIST"), ("copy_detection_photos", "photos")):
        have = {n: r for n, r in results.items() if task in r}
        if not have:
            continue
        doc.h(3, f"Copy detection on {set_name}")
        doc.table(["extractor", "db / queries"] + [lbl for _, lbl in COPY_METRICS],
                  [[short(n), _size_note(r, task)] + [_fmt(r[task][m]) for m, _ in COPY_METRICS]
                   for n, r in have.items()])
        sents = [compare_sentence(results, task, m, lbl, f"copy detection on {set_name}")
                 for m, lbl in COPY_METRICS[:1] + COPY_METRICS[3:]]
        sents += [gap_sentence(results, task, "recall_at_1", "copy-detection R@1"),
                  floor_sentence(results, task, "recall_at_1", "copy-detection R@1")]
        doc.bullets([s for s in sents if s])
        if bar_chart(results, task, COPY_METRICS, fig_dir / f"{task}_bars.png", f"Task 2: copy detection, {set_name}"):
            doc.img(f"figures/{task}_bars.png", f"copy detection bars {set_name}")

    for entry in data.get("matched_subsets", []):
        sub, sz = entry["results"], entry["sizes"]
        doc.h(2, f"Like for like: every extractor on {short(entry['subset_of'])}'s subset")
        doc.p(f"{short(entry['subset_of'])} is too slow on this CPU for the full sets, so it was measured on the "
              f"first {sz['db']:,} training images (database) and first {sz['queries']:,} test images (queries), "
              f"with {sz['copy_sources']} copy sources; here every extractor is measured on exactly that subset.")
        doc.table(["extractor", "MAP@R", "P@10", "R@1 (1-NN)", "20-NN acc", "copy R@1", "copy R@10",
                   "copy mAP (1 target)", "copy micro-AP"],
                  [[short(n), *(_fmt(r["class_retrieval"][m]) for m in ("map_at_r", "precision_at_10", "recall_at_1",
                                                                       "knn20_accuracy")),
                    *(_fmt(r["copy_detection_fmnist"][m]) for m, _ in COPY_METRICS)] for n, r in sub.items()])
        sents = [compare_sentence(sub, "class_retrieval", "map_at_r", "MAP@R", "class retrieval (subset)"),
                 compare_sentence(sub, "class_retrieval", "knn20_accuracy", "20-NN accuracy", "class retrieval "
                                  "(subset)"),
                 compare_sentence(sub, "copy_detection_fmnist", "recall_at_10", "R@10", "copy detection (subset)"),
                 gap_sentence(sub, "class_retrieval", "map_at_r", "MAP@R (subset)")]
        doc.bullets([x for x in sents if x])

    doc.h(2, "Precision-recall curves")
    tasks = [("class_retrieval", "class retrieval (interpolated, mean over queries)"),
             ("copy_detection_fmnist", "copy detection, Fashion-MNIST (micro, pooled top-10)")]
    if any("copy_detection_photos" in r for r in results.values()):
        tasks.append(("copy_detection_photos", "copy detection, photos (micro, pooled top-10)"))
    pr_chart(results, tasks, fig_dir / "pr_curves.png")
    doc.img("figures/pr_curves.png", "precision-recall curves")

    if tsne:
        done = tsne_chart(results, out_dir, fig_dir / "tsne.png", meta["classes"])
        if done:
            doc.h(2, "t-SNE of test embeddings")
            doc.p("scikit-learn t-SNE (PCA init, perplexity 30, seed 0) of the first test-set embeddings of each "
                  "extractor, coloured by the true class (the labels are only used for colour).")
            doc.img("figures/tsne.png", "t-SNE maps")

    doc.h(2, "Retrieval grids")
    if retrieval_grid(results, fig_dir / "retrieval_grid.png"):
        doc.p("The same test queries for every extractor (an extractor measured on a subset searches its subset).")
        doc.img("figures/retrieval_grid.png", "retrieval grid")
    if copy_grid(results, meta, fig_dir / "copy_grid.png"):
        doc.img("figures/copy_grid.png", "copy detection grid")

    if explain_images:
        paths = explain_gallery(results, out_dir)
        if paths:
            doc.h(2, "What the extractors look at")
            doc.p("ViTs: the last block's CLS self-attention of each head over the image, and the patches holding "
                  "60% of the (head-averaged) attention mass (DINO's thresholded mask). The supervised ViT and "
                  "EfficientNet also get Grad-CAM on their predicted class (ViT: the input tokens of the last "
                  "block; EfficientNet: `last_conv`).")
            for p in paths:
                doc.img(str(p.relative_to(out_dir)), p.stem)

    serving = out_dir / "serving_check.json"
    if serving.exists():
        sc = json.loads(serving.read_text())
        off, gw = sc["offline_exact"], sc["gateway_hnsw"]
        doc.h(2, "Offline vs through the serving stack")
        doc.p(f"`{sc['model']}` measured end to end through the gateway (Triton embeddings, Milvus HNSW "
              f"M={sc['hnsw']['M']}, efConstruction={sc['hnsw']['efConstruction']}, ef={sc['hnsw']['ef']}) on "
              f"{sc['n_db']} training images as the database and {sc['n_queries']} test queries, against torch "
              f"embeddings with exact search on the same sets. ANN recall@10 (overlap of the served top-10 with "
              f"the exact top-10): {sc['ann_recall@10']:.4f}.")
        doc.table(["", "recall@1", "precision@10"],
                  [["offline, exact", f"{off['recall@1']:.4f}", f"{off['precision@10']:.4f}"],
                   ["gateway, HNSW", f"{gw['recall@1']:.4f}", f"{gw['precision@10']:.4f}"]])

    doc.h(2, "Reproduce")
    doc.p("`vsearch eval` (or `python -m evaluation.run`), then the report is written from "
          "`reports/comparison/results.json`; `vsearch eval --serving-check` adds the end-to-end check; "
          "`vsearch eval --merge --extractor NAME` re-measures one extractor into an existing report.")
    (out_dir / "report.md").write_text(doc.markdown())
    (out_dir / "report.html").write_text(doc.html("Extractor comparison"))
    return out_dir / "report.md"


if __name__ == "__main__":
    import sys

    write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
