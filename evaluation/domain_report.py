"""The report of ``vsearch eval --images``: results.json, headline.json with the targets, report.md / .html and
figures, under ``reports/domains/<set>/``. The reading is generated from the numbers, never written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation.document import Doc
from evaluation.figures import pyplot, save_figure
from evaluation.folder_eval import RANDOM_PREFIX
from extractors.registry import PIXELS

# The targets per set: label-free learned extractors against the ImageNet pre-trained one, same queries.
PRETRAINED = "efficientnet_lite0_imagenet"
TARGETS: dict[str, list[tuple[str, str, str, float]]] = {
    # (target name, metric, baseline ("" = an absolute bar), margin or bar)
    "brain-mri": [("map_at_r_vs_pretrained", "map_at_r", PRETRAINED, 0.05), ("knn20", "knn20", "", 0.93)],
    "gtsrb": [("map_at_r_vs_pretrained", "map_at_r", PRETRAINED, 0.05)],
}
# Where each set comes from (reports cite their data; ../shared/data/README.md).
SOURCES = {
    "brain-mri": "Brain Tumor MRI (Kaggle, masoudnickparvar; figshare + SARTAJ + Br35H): Training/ as the database, "
                 "Testing/ as the queries",
    "gtsrb": "German Traffic Sign Recognition Benchmark (training set, even-numbered tracks)",
    "cifar10": "CIFAR-10 (Krizhevsky 2009), as JPEG files",
}


def label_free(result: dict) -> list[str]:
    """Learned extractors that never saw a label of this domain nor of ImageNet's classes: not the pixel floor,
    not a random network, not the pre-trained or a supervised one."""
    return [n for n, e in result["extractors"].items()
            if not e["labels_used"] and n != PIXELS and not n.startswith(RANDOM_PREFIX) and n != PRETRAINED]


def targets(result: dict) -> dict:
    """{target: {measured, threshold, met, extractor}} for the set's targets; the best label-free extractor counts."""
    out = {}
    ext = result["extractors"]
    candidates = [n for n in label_free(result) if "class_retrieval" in ext[n]]
    for name, metric, baseline, value in TARGETS.get(result["set"], []):
        if baseline and (baseline not in ext or "class_retrieval" not in ext[baseline]):
            continue
        threshold = round(ext[baseline]["class_retrieval"][metric] + value, 4) if baseline else value
        if not candidates:
            out[name] = {"measured": None, "threshold": threshold, "met": False, "extractor": None}
            continue
        best = max(candidates, key=lambda n: ext[n]["class_retrieval"][metric])
        measured = ext[best]["class_retrieval"][metric]
        out[name] = {"measured": measured, "threshold": threshold, "met": bool(measured >= threshold),
                     "extractor": best}
    return out


# What must be equal for two runs' extractors to sit in one table: the same database, queries and copies.
SAME_PROTOCOL = ("set", "images", "queries", "db_images", "query_images", "copy_sources", "levels", "group_pattern",
                 "duplicate_queries")


def merge_results(earlier: dict, new: dict) -> dict:
    """``earlier`` with ``new``'s extractors added or replaced (``vsearch eval --images ... --merge``), when both
    measured the same protocol; otherwise an error that says what differs."""
    differ = [k for k in SAME_PROTOCOL if earlier.get(k) != new.get(k)]
    if differ:
        raise ValueError(f"cannot merge into the earlier results: {', '.join(differ)} differ; run every extractor")
    return {**earlier, "extractors": {**earlier["extractors"], **new["extractors"]},
            "created": new["created"], "merged": sorted({*earlier.get("merged", []), earlier["created"]})}


def write_domain_report(result: dict, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    headline = {"set": result["set"], "source": SOURCES.get(result["set"], result["images"]),
                "extractors": {n: {k: e.get(k) for k in ("class_retrieval", "class_retrieval_without_duplicates",
                                                         "label_efficiency_knn20", "trained_on", "labels_used")}
                               | {"copies_mean_r_at_1": e["copies"]["mean_r_at_1"],
                                  "copies_geometric_r_at_1": e["copies"]["geometric_mean_r_at_1"]}
                               for n, e in result["extractors"].items()},
                "targets": targets(result)}
    (out / "headline.json").write_text(json.dumps(headline, indent=1) + "\n")
    figures = _figures(result, out / "figures")
    doc = _document(result, headline, figures)
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html(f"visual-search on {result['set']}"))
    return out / "report.md"


def _figures(result: dict, folder: Path) -> list[tuple[str, str]]:
    plt = pyplot()
    names = list(result["extractors"])
    made = []
    ext = result["extractors"]
    if all("class_retrieval" in ext[n] for n in names):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, metric, title in zip(axes, ("knn20", "map_at_r"), ("weighted 20-NN accuracy", "MAP@R"), strict=True):
            vals = [ext[n]["class_retrieval"][metric] for n in names]
            ax.barh(names, vals, color=["#999" if not ext[n]["labels_used"] and n in (PIXELS,) else
                                        ("#d62728" if ext[n]["labels_used"] else "#1f77b4") for n in names])
            ax.set_title(title)
            ax.invert_yaxis()
            for y, v in enumerate(vals):
                ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        save_figure(fig, folder / "class_retrieval.png")
        made.append(("figures/class_retrieval.png", "class retrieval per extractor (red: labels used)"))
    fig, ax = plt.subplots(figsize=(11, 4))
    levels = result["levels"]
    for n in names:
        ax.plot(range(len(levels)), [ext[n]["copies"]["recall_at_1"][lv] for lv in levels], marker="o", ms=3, label=n)
    ax.set_xticks(range(len(levels)), levels, rotation=70, fontsize=7)
    ax.set_ylabel("R@1 (original found first)")
    ax.legend(fontsize=7)
    save_figure(fig, folder / "copies.png")
    made.append(("figures/copies.png", "graded copies: R@1 per edit level"))
    return made


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _document(result: dict, headline: dict, figures: list[tuple[str, str]]) -> Doc:
    ext = result["extractors"]
    doc = Doc()
    doc.h(1, f"Extractors on {result['set']}")
    doc.p(f"Data: {headline['source']}. Database {result['db_images']:,} images"
          + (f", queries {result['query_images']:,}" if result["query_images"] else "")
          + f"; {len(result['classes'])} classes. Measured {result['created']} on {result['threads']} CPU threads.")
    doc.h(2, "Reading")
    doc.bullets(_reading(result, headline))
    if headline["targets"]:
        doc.h(2, "Targets")
        doc.table(["target", "extractor", "measured", "threshold", "met"],
                  [[k, str(t["extractor"]), _f(t["measured"]), _f(t["threshold"]), "yes" if t["met"] else "**no**"]
                   for k, t in headline["targets"].items()])
    if any("class_retrieval" in e for e in ext.values()):
        doc.h(2, "Class retrieval (exact cosine search over the whole database)")
        rows = []
        for n, e in ext.items():
            c, d = e["class_retrieval"], e.get("class_retrieval_without_duplicates")
            rows.append([n, "yes" if e["labels_used"] else "no", _f(c["knn20"]), _f(c["map_at_r"]),
                         _f(c["precision_at_10"]), _f(d["knn20"]) if d else "-", _f(d["map_at_r"]) if d else "-",
                         *[_f(e["label_efficiency_knn20"][str(b)]) for b in (1, 10, 100)]])
        doc.table(["extractor", "labels", "20-NN", "MAP@R", "P@10", "20-NN w/o dup.", "MAP@R w/o dup.",
                   "20-NN, 1 label/class", "10", "100"], rows)
        if result["duplicate_queries"]:
            doc.p(f"{result['duplicate_queries']} of {result['query_images']} queries are near-identical files of a "
                  f"database image (32 px grey pixels, each image centred, correlate >= "
                  f"{result['duplicate_correlation']}); 'w/o dup.' leaves them out.")
    doc.h(2, "Graded copies (no labels needed)")
    doc.p(f"{result['copy_sources']} database images, each edited once per level; R@1 = the original ranks first.")
    levels = result["levels"]
    doc.table(["extractor", "mean R@1", "geometric R@1", *levels],
              [[n, _f(e["copies"]["mean_r_at_1"]), _f(e["copies"]["geometric_mean_r_at_1"]),
                *[_f(e["copies"]["recall_at_1"][lv]) for lv in levels]] for n, e in ext.items()])
    doc.h(2, "Extractors")
    doc.table(["extractor", "input px", "trained on", "embedding images/s"],
              [[n, str(e["input_size"]), e["trained_on"], str(e["embed_images_per_s"])] for n, e in ext.items()])
    for path, alt in figures:
        doc.img(path, alt)
    return doc


def _reading(result: dict, headline: dict) -> list[str]:
    ext = result["extractors"]
    out = []
    classed = {n: e for n, e in ext.items() if "class_retrieval" in e}
    if classed:
        best = max(classed, key=lambda n: classed[n]["class_retrieval"]["map_at_r"])
        out.append(f"Best class retrieval: **{best}** (MAP@R {classed[best]['class_retrieval']['map_at_r']:.3f}, "
                   f"20-NN {classed[best]['class_retrieval']['knn20']:.3f}).")
        free, sup = label_free(result), [n for n, e in classed.items() if e["labels_used"]]
        if free and sup:
            f = max(free, key=lambda n: classed[n]["class_retrieval"]["map_at_r"])
            s = max(sup, key=lambda n: classed[n]["class_retrieval"]["map_at_r"])
            fm, sm = classed[f]["class_retrieval"]["map_at_r"], classed[s]["class_retrieval"]["map_at_r"]
            out.append(f"Label-free {f} {'beats' if fm > sm else 'trails'} the best labelled extractor {s} on MAP@R "
                       f"by {abs(fm - sm):.3f} ({fm:.3f} vs {sm:.3f})"
                       + ("; labels win class retrieval here." if fm <= sm else "."))
    best_copy = max(ext, key=lambda n: ext[n]["copies"]["mean_r_at_1"])
    out.append(f"Best at finding edited copies: **{best_copy}** (mean R@1 {ext[best_copy]['copies']['mean_r_at_1']:.3f}"
               f" over {len(result['levels']) - 1} edits).")
    hardest = min(result["levels"], key=lambda lv: float(np.mean([e["copies"]["recall_at_1"][lv]
                                                                  for e in ext.values()])))
    out.append(f"Hardest edit for every extractor on average: {hardest}.")
    for k, t in headline["targets"].items():
        if t["measured"] is not None and not t["met"]:
            out.append(f"Target {k} missed by {t['threshold'] - t['measured']:.3f} ({t['extractor']}).")
    return out
