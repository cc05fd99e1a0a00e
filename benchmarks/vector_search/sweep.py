"""HNSW tuning: the FAISS sweep over M x efConstruction x ef, the rule that picks a graph from it (``choose``), and the
smallest ef reaching the recall target on a swept engine (``final_ef``)."""

from __future__ import annotations

import gc

from benchmarks.common import console, step
from benchmarks.vector_search.data import Dataset, recall_at_k
from benchmarks.vector_search.engines import FaissHnsw
from benchmarks.vector_search.measure import latency, singles
from benchmarks.vector_search.plan import RECALL_TARGET, TIE_BAND, TOP_K, Hnsw, Plan


def choose(rows: list[dict], keys: list[str], target: float = RECALL_TARGET) -> dict:
    """The sweep's pick over the data sets ``keys``, by the rule the section states: per graph the smallest ef
    (>= top_k) reaching the target on all of them; the lowest search cost (distance computations per query x
    dimension, summed: deterministic where timings on a shared machine are not) wins, costs within TIE_BAND tie, ties
    go to the smallest ef, then the fastest build. No graph reaching the target: the best worst-case recall."""
    by_graph: dict[tuple[int, int], dict[int, dict[str, dict]]] = {}
    for r in rows:
        if r["dataset"] in keys:
            by_graph.setdefault((r["M"], r["efConstruction"]), {}).setdefault(r["ef"], {})[r["dataset"]] = r
    candidates = []
    for (m, efc), by_ef in by_graph.items():
        for ef in sorted(by_ef):
            per = by_ef[ef]
            if len(per) < len(keys):
                continue
            recall = min(per[k]["recall_at_10"] for k in keys)
            cand = {"M": m, "efConstruction": efc, "ef": ef, "recall_at_10": {k: per[k]["recall_at_10"] for k in keys},
                    "min_recall": recall,
                    "cost": round(sum(per[k]["distances_per_query"] * per[k]["dim"] for k in keys)),
                    "distances_per_query": {k: per[k]["distances_per_query"] for k in keys},
                    "p50_ms": {k: per[k]["p50_ms"] for k in keys},
                    "build_s": round(sum(per[k]["build_s"] for k in keys), 2),
                    "meets_target": ef >= TOP_K and recall >= target}
            candidates.append(cand)
            if cand["meets_target"]:
                break  # the graph's smallest passing ef: larger ones only cost more
    ok = [c for c in candidates if c["meets_target"]]
    if not ok:
        return max(candidates, key=lambda c: (c["min_recall"], -c["cost"]))
    floor = min(c["cost"] for c in ok)
    ties = [c for c in ok if c["cost"] <= TIE_BAND * floor]
    return min(ties, key=lambda c: (c["ef"], c["build_s"], c["cost"]))


def faiss_sweep(datasets: list[Dataset], plan: Plan) -> dict:
    """FAISS HNSW over the grid M x efConstruction x ef on each data set: build time, recall@10, distance
    computations per query and nq=1 latency; the pick (``choose``) over all of them, and over the first alone."""
    import faiss

    rows: list[dict] = []
    grid = [(ds, m, efc) for ds in datasets for m in plan.sweep_m for efc in plan.sweep_efc]
    with step(f"HNSW sweep (FAISS, {len(grid) // len(datasets)} graphs x {len(datasets)} data sets)",
              len(grid)) as update:
        for ds, m, efc in grid:
            eng = FaissHnsw(ds, Hnsw(m, efc, TOP_K), chunk=plan.add_chunk)
            eng.load()
            for ef in plan.sweep_ef:
                eng.set_ef(ef)
                faiss.cvar.hnsw_stats.reset()
                found = eng.search(ds.queries)
                ndis = faiss.cvar.hnsw_stats.ndis / len(ds.queries)
                lat = latency(eng.search, singles(ds), plan.ef_lat_n, plan.lat_max_s,
                              f"{ds.key} M={m} efC={efc} ef={ef}", min_n=plan.ef_lat_n)
                rows.append({"dataset": ds.key, "dim": ds.dim, "M": m, "efConstruction": efc, "ef": ef,
                             "build_s": round(eng.insert_s, 2), "recall_at_10": round(recall_at_k(found, ds), 4),
                             "distances_per_query": round(ndis, 1), "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})
            console.log(f"sweep {ds.key} M={m} efC={efc}: build {eng.insert_s:.1f} s, best recall "
                        f"{max(r['recall_at_10'] for r in rows[-len(plan.sweep_ef):]):.4f}")
            eng.close()
            gc.collect()
            update(advance=1)
    keys = [ds.key for ds in datasets]
    pick = choose(rows, keys)
    console.log(f"[bold]sweep pick[/]: M={pick['M']} efC={pick['efConstruction']} ef={pick['ef']} "
                f"(recall@10 {pick['recall_at_10']}, cost {pick['cost']:,})")
    return {"engine": "faiss_hnsw", "datasets": keys, "rows": rows, "pick": pick,
            "pick_first_only": choose(rows, keys[:1]), "target": RECALL_TARGET, "tie_band": TIE_BAND}


def final_ef(sweep: list[dict], target: float = RECALL_TARGET) -> tuple[int, bool]:
    """The smallest ef whose recall reaches the target (the lowest-latency one on a given graph)."""
    for r in sorted(sweep, key=lambda r: r["ef"]):
        if r["ef"] >= TOP_K and r["recall_at_10"] >= target:
            return r["ef"], True
    return max(r["ef"] for r in sweep), False

