"""``OUT/representations.md`` and ``.html``: the representations measurements as tables, per-level curves and an
attention grid, with a reading generated from the numbers (no figure is typed in)."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.descriptors import CLS_GEM_WHITENED
from evaluation.document import Doc
from evaluation.figures import pyplot, save_figure
from evaluation.headline import ROLES, mean_geometric_r1
from evaluation.semantic_bias import training_compute
from extractors.registry import REGISTRY

SHORT = {ROLES["pixels"]: "pixels", "random_vit_femto_p7_fmnist": "random ViT", ROLES["dino"]: "DINO ViT",
         ROLES["supervised"]: "supervised ViT", ROLES["supervised_coarse"]: "supervised-coarse ViT",
         "efficientnet_lite0_imagenet": "EfficientNet-Lite0"}


def short(name: str) -> str:
    return SHORT.get(name, name)


def _f(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, int | float) else "-"


def _with_descriptor(row: dict, side: str) -> str:
    """``0.705 (cls)``: a label-efficiency number with the descriptor it was measured with."""
    d = row.get(f"{side}_descriptor")
    return f"{_f(row.get(side))} (`{d}`)" if d else _f(row.get(side))


def reading(h: dict) -> list[str]:
    """One sentence per target: met or missed, by how much, from headline.json's numbers."""
    out = []
    for t in h["targets"]:
        if t["met"] is None:
            out.append(f"{t['target']}: not measured (missing weights or results).")
        else:
            verdict = "met" if t["met"] else "missed"
            out.append(f"{t['target']}: **{verdict}** (measured {t['measured']:.3f} against {t['threshold']:.3f}, "
                       f"margin {t['margin']:+.3f}).")
    return out


def wins_and_losses(h: dict) -> list[str]:
    """Where DINO wins and where it loses against the supervised ViT, per measurement."""
    d, s = ROLES["dino"], ROLES["supervised"]
    rows = [("fine 10-class 20-NN", h["knn20"]), ("within-group 20-NN", h["within_group_knn20"]),
            ("digits transfer 20-NN", h["transfer_digits_knn"]), ("attention on the garment", h["attention_on_object"])]
    out = []
    for label, values in rows:
        if d in values and s in values:
            diff = values[d] - values[s]
            word = "wins" if diff > 0 else "loses"
            out.append(f"{label}: DINO {word} ({_f(values[d])} vs supervised {_f(values[s])}, {diff:+.3f}).")
    geo_d, geo_s = mean_geometric_r1(h, d), mean_geometric_r1(h, s)
    if geo_d is not None and geo_s is not None:
        word = "wins" if geo_d > geo_s else "loses"
        out.append(f"near-duplicates after geometric edits (mean R@1): DINO {word} ({_f(geo_d)} vs {_f(geo_s)}).")
    levels = h["near_duplicates"]
    better = [lv for lv, row in levels.items() if d in row and s in row and row[d] > row[s] and lv != "identity"]
    worse = [lv for lv, row in levels.items() if d in row and s in row and row[d] < row[s]]
    out.append(f"near-duplicate levels: DINO ahead of supervised on {len(better)} of {len(better) + len(worse)} "
               f"levels that differ ({', '.join(better[:12])}{'...' if len(better) > 12 else ''}).")
    return out


def level_curves(nd: dict, path: Path) -> bool:
    """R@1 against edit strength, one panel per edit kind, one line per extractor (Fashion-MNIST)."""
    plt = pyplot()
    res = nd.get("fashion_mnist", {}).get("results", {})
    if not res:
        return False
    kinds: dict[str, list[dict]] = {}
    for lv in nd["levels"]:
        if lv["kind"] not in ("identity", "strong", "flip"):
            kinds.setdefault(lv["kind"], []).append(lv)
    cols = 4
    rows = (len(kinds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (kind, lvs) in zip(axes.flat, kinds.items(), strict=False):
        for name, r in res.items():
            ax.plot([lv["strength"] for lv in lvs], [r["levels"][lv["name"]]["recall_at_1"] for lv in lvs],
                    marker="o", label=short(name))
        ax.set_title(kind)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("strength")
        ax.set_ylabel("R@1")
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    save_figure(fig, path, dpi=110)
    return True


def compute_section(doc: Doc, names: list[str]) -> None:
    """The training compute of every trained extractor, side by side, from the logs beside the weights."""
    rows = []
    for name in names:
        c = training_compute(name) if name in REGISTRY else None
        if c:
            rows.append([short(name), str(c["epochs"]), f"{c['wall_s'] / 3600:.2f}",
                         ", ".join(f"{r['log']}: {r['epochs']} epochs" for r in c["runs"])])
    if rows:
        doc.h(2, "Training compute (wall time on this project's 2-core CPU machine, shared with development)")
        doc.table(["extractor", "epochs", "wall hours", "runs"], rows)


def learning_curve_section(doc: Doc, out_dir: Path) -> None:
    """The DINO numbers at each measured checkpoint and the log-linear extrapolation (``evaluation.learning_curve``),
    when ``learning_curve.json`` is there."""
    path = out_dir / "learning_curve.json"
    if not path.exists():
        return
    lc = json.loads(path.read_text())
    points = {int(e): v for e, v in lc["points"].items()}
    metrics = [m for m in lc["extrapolated"] if all(m in v for v in points.values())]
    doc.h(2, "Learning curve: the DINO numbers against training epochs")
    doc.p("Checkpoints of the same DINO run, each measured as the served model is (its own whitening)"
          + (" in quick mode" if lc.get("quick") else "") + ".")
    doc.table(["epochs"] + metrics, [[str(e)] + [_f(points[e][m]) for m in metrics] for e in sorted(points)])
    doc.p("**Extrapolated, not measured:** a least-squares line in log2(epochs) through those points, read at 2x and "
          "4x the last checkpoint's epochs, and the epochs at which it would meet the target.")
    rows = []
    for m in metrics:
        ex = lc["extrapolated"][m]
        if not ex.get("fit"):
            continue
        reach = ex.get("epochs_to_target")
        rows.append([m, f"{ex['fit']['b_per_doubling']:+.3f}", _f(ex["at_2x_epochs"]["value"]),
                     _f(ex["at_4x_epochs"]["value"]), _f(ex.get("target")),
                     "never (flat or falling)" if reach is None and "target" in ex else
                     "-" if reach is None else f"{reach:,.0f}"])
    doc.table(["number", "per doubling of epochs", "at 2x epochs", "at 4x epochs", "target", "epochs to target"], rows)
    if (out_dir / "figures" / "learning_curve.png").exists():
        doc.img("figures/learning_curve.png", "DINO numbers against epochs, with the extrapolation dashed")


def write_representations_report(results: dict[str, dict], h: dict, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    doc = Doc()
    doc.h(1, "Representations: where self-supervision wins, where labels win")
    doc.p("Generated by `vsearch eval` from the JSON files beside this page (`headline.json`, `near_duplicates.json`, "
          "`semantic_bias.json`, `label_efficiency.json`, `transfer_digits.json`, `attention_on_object.json`).")
    doc.h(2, "Reading")
    doc.bullets(reading(h) + wins_and_losses(h))

    sb = results["semantic_bias"]
    doc.h(2, "Class retrieval and the semantic-bias experiment (20-NN, 60k train / 10k test)")
    rows = [[short(n), f"`{v.get('descriptor', '-')}`", _f(v["knn20"]), _f(v.get("coarse_knn20")),
             _f(v["within_group_knn20"]["tops"]), _f(v["within_group_knn20"]["footwear"]),
             _f(v["within_group_knn20"]["mean"])]
            for n, v in sb.items() if isinstance(v, dict) and "knn20" in v]
    doc.table(["extractor", "descriptor", "fine 20-NN", "coarse-group 20-NN", "within tops", "within footwear",
               "within mean"], rows)
    doc.p("Each ViT is measured with its three descriptors and shown at the one with the best fine 20-NN; all of "
          "them (fine / within-group mean):")
    by = {n: v["by_descriptor"] for n, v in sb.items() if isinstance(v, dict) and len(v.get("by_descriptor", {})) > 1}
    if by:
        kinds = list(next(iter(by.values())))
        doc.table(["extractor"] + kinds, [[short(n)] + [f"{_f(v[k]['knn20'])} / {_f(v[k]['within_group_knn20'])}"
                                                        if k in v else "-" for k in kinds] for n, v in by.items()])

    nd = results["near_duplicates"]
    fm = nd.get("fashion_mnist", {})
    doc.h(2, "Graded near-duplicates (R@1 of the original)")
    doc.p(f"Fashion-MNIST: {fm.get('n_queries_per_level')} edited test images per level searched among all "
          f"{fm.get('n_db')} images (exact search). Geometric levels: {', '.join(nd['geometric_levels'])}.")
    names = list(fm.get("results", {}))
    table = [[lv] + [_f(fm["results"][n]["levels"][lv]["recall_at_1"]) for n in names] for lv in nd["level_names"]]
    table.append(["**mean geometric**"] + [_f(fm["results"][n]["geometric_mean_r_at_1"]) for n in names])
    table.append(["**mean, all edits**"] + [_f(fm["results"][n]["mean_r_at_1"]) for n in names])
    doc.table(["level"] + [short(n) for n in names], table)
    if level_curves(nd, out_dir / "figures" / "near_duplicate_levels.png"):
        doc.img("figures/near_duplicate_levels.png", "R@1 per edit strength")
    desc = nd.get("descriptors", {}).get("fashion_mnist", {})
    if desc:
        doc.h(3, "Descriptors (DINO's copy-detection choices)")
        kinds = list(next(iter(desc.values())))
        doc.table(["extractor"] + [f"{k}: geometric / all" for k in kinds],
                  [[short(n)] + [f"{_f(v[k]['geometric_mean_r_at_1'])} / {_f(v[k]['mean_r_at_1'])}" for k in kinds]
                   for n, v in desc.items()])
        best = nd["descriptors"].get("best", {}).get("overall_by_mean_r_at_1")
        doc.p(f"Best descriptor by mean R@1: `{best}`; the gateway serves `{CLS_GEM_WHITENED}` "
              "(`extractors.descriptors.CopyDescriptor`).")
    ph = nd.get("photos", {})
    if ph.get("results"):
        doc.h(3, f"Photos ({ph.get('n_db')} bundled photos, every level)")
        pn = list(ph["results"])
        doc.table(["level"] + [short(n) for n in pn],
                  [[lv] + [_f(ph["results"][n]["levels"][lv]["recall_at_1"]) for n in pn] for lv in nd["level_names"]])

    le = {n: r for n, r in results["label_efficiency"].items() if isinstance(r, dict) and "n_db" in r}
    doc.h(2, "Label efficiency (20-NN with only n labelled images per class as the database)")
    doc.table(["labels per class", "DINO features (frozen)", "ViT trained on these labels (k-NN)",
               "that ViT's classifier", "pixels"],
              [[n, _with_descriptor(r, "dino_features"), _with_descriptor(r, "trained_on_these_labels"),
                _f(r.get("trained_classifier")), _f(r.get(ROLES["pixels"]))] for n, r in le.items()])
    sides = [(n, side) for n, r in le.items() for side in ("dino_features", "trained_on_these_labels")
             if f"{side}_by_descriptor" in r]
    if sides:
        doc.p("Each side takes its best of the three descriptors; every one of them:")
        kinds = list(le[sides[0][0]][f"{sides[0][1]}_by_descriptor"])
        doc.table(["labels per class", "side"] + kinds,
                  [[n, side.replace("_", " ")] + [_f(le[n][f"{side}_by_descriptor"].get(k)) for k in kinds]
                   for n, side in sides])

    doc.h(2, "Transfer to data no extractor saw: scikit-learn's 1,797 handwritten digits (20-NN, fixed split)")
    td = results["transfer_digits"]
    by = td.get("_by_descriptor", {})
    kinds = next((list(v["by_descriptor"]) for v in by.values() if len(v["by_descriptor"]) > 1), [])
    doc.table(["extractor", "20-NN", "descriptor"] + kinds,
              [[short(n), _f(v), f"`{by.get(n, {}).get('descriptor', '-')}`"]
               + [_f(by.get(n, {}).get("by_descriptor", {}).get(k)) for k in kinds]
               for n, v in td.items() if isinstance(v, float) and not n.startswith("_")])

    ao = results["attention_on_object"]
    doc.h(2, "Attention on the object (last block's CLS attention, Fashion-MNIST test images)")
    doc.table(["extractor", "attention on the garment", "uniform attention would give", "IoU of the 60%-mass mask"],
              [[short(n), _f(v["fraction_on_object"]), _f(v["uniform_baseline"]), _f(v["iou_mass60"])]
               for n, v in ao.items() if isinstance(v, dict) and "fraction_on_object" in v])
    if (out_dir / "figures" / "attention_on_object.png").exists():
        doc.img("figures/attention_on_object.png", "attention of DINO and the supervised ViT on test garments")

    compute_section(doc, list(sb))
    learning_curve_section(doc, out_dir)
    (out_dir / "representations.md").write_text(doc.markdown())
    (out_dir / "representations.html").write_text(doc.html("visual-search: representations"))
    return out_dir / "representations.md"
