"""The dedup benchmark's BENCHMARKS.md section and targets, from the result."""

from __future__ import annotations

from benchmarks.common import Target, loadavg_sentence, section, target_bullets
from evaluation.document import Doc

TITLE = "Duplicate groups: FindDuplicates vs perceptual hashing"
WALL_TARGET_S = 60.0  # FindDuplicates over the 73,000-item Fashion-MNIST collection
SET_NAMES = {"fashion_mnist": "Fashion-MNIST", "photos": "photos"}


def best_hash(s: dict) -> tuple[str, dict]:
    rows = [(kind, row) for kind, h in s["hashes"].items() for row in h["thresholds"] if "f1" in row]
    return max(rows, key=lambda kr: kr[1]["f1"])


def targets(result: dict) -> list[Target]:
    out = []
    for name, s in result["sets"].items():
        fd = s["find_duplicates"]
        kind, row = best_hash(s)
        out.append(Target(f"dedup F1, {SET_NAMES[name]}", "FindDuplicates >= the best pHash/dHash threshold",
                          f"{fd['f1']:.3f} vs {kind} at Hamming {row['hamming']}: {row['f1']:.3f}",
                          fd["f1"] >= row["f1"]))
    fm = result["sets"].get("fashion_mnist")
    if fm and not result.get("quick"):
        wall = fm["find_duplicates"]["wall_s"]
        out.append(Target("dedup wall time", f"FindDuplicates on {fm['items']:,} items < {WALL_TARGET_S:.0f} s",
                          f"{wall:.1f} s", wall < WALL_TARGET_S))
    return out


def _sets(doc: Doc, result: dict) -> None:
    rows = []
    for name, s in result["sets"].items():
        fd = s["find_duplicates"]
        kind, row = best_hash(s)
        rows.append([f"{SET_NAMES[name]}: {s['originals']:,} + {s['copies']:,} copies ({len(s['levels'])} levels)",
                     f"{fd['wall_s']:.1f} s; {fd['precision']:.1%} / {fd['recall']:.1%} (F1 {fd['f1']:.3f})",
                     f"{kind} at Hamming {row['hamming']}: {row['precision']:.1%} / {row['recall']:.1%} "
                     f"(F1 {row['f1']:.3f}), {row['wall_s']:.1f} s"])
    doc.table(["collection", "FindDuplicates: time; pair precision / recall", "best hash"], rows)
    for name, s in result["sets"].items():
        fd = s["find_duplicates"]
        doc.p(f"**{SET_NAMES[name]}** ({s['model']}, indexed in {s['index_s']:.0f} s): FindDuplicates at the "
              f"calibrated NEAR_DUPLICATE bound {fd['min_score']:.4f} found {fd['groups']:,} groups (largest "
              f"{fd['largest_group']:,}), {fd['labelled_pairs']:,} pairs holding a copy and {fd['unlabelled_pairs']:,} "
              "pairs of two originals (unlabelled, outside precision).")
        table = []
        for kind, h in s["hashes"].items():
            for row in h["thresholds"]:
                if "skipped" in row:
                    table.append([kind, str(row["hamming"]), "-", "-", "-", f"{row['pairs']:,}+ pairs: skipped"])
                else:
                    table.append([kind, str(row["hamming"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                                  f"{row['f1']:.3f}", f"{row['unlabelled_pairs']:,} pairs of originals, largest group "
                                                      f"{row['largest_group']:,}"])
        doc.table(["hash", "Hamming", "precision", "recall", "F1", "notes"], table)
        levels = list(fd["copy_recall_by_level"])
        best = {kind: max((r for r in h["thresholds"] if "f1" in r), key=lambda r: r["f1"])
                for kind, h in s["hashes"].items()}
        doc.table(["level", "FindDuplicates"] + [f"{k} @ {r['hamming']}" for k, r in best.items()],
                  [[lv, f"{fd['copy_recall_by_level'][lv]:.2f}"]
                   + [f"{r['copy_recall_by_level'].get(lv, 0):.2f}" for r in best.values()] for lv in levels])


def _gate(doc: Doc, result: dict) -> None:
    g = result.get("gate")
    if not g:
        return
    doc.p(f"What the dedup gate costs on the upsert path: {g['items']:,} Fashion-MNIST images per run, one stream of "
          f"{g['batch']} at a time, best of {g['rounds']} run(s): ALLOW {g['allow_ms_per_item']:.2f} ms per item, FLAG "
          f"{g['flag_ms_per_item']:.2f} ms per item ({g['overhead']:+.0%}; {g['flagged']:,} items flagged: each FLAG "
          "item duplicates an item written just before, the worst case).")


def _intro(doc: Doc, result: dict) -> None:
    doc.p("Known edited copies (one graded edit each, extractors/copies.py) are injected into a collection; "
          "FindDuplicates (what `vsearch dedup` calls) groups it at the model's calibrated NEAR_DUPLICATE bound, and "
          "imagehash's pHash and dHash group it at each Hamming threshold (every pair within it, joined the same "
          "way), in the same run. A group counts as all its pairs; a pair is true when both items are of one "
          "family (an original and its copies)." + loadavg_sentence(result))
    target_bullets(doc, targets(result))


def markdown(result: dict) -> str:
    return section(TITLE + " (`benchmarks/dedup/`)", result, _intro, _sets, _gate)
