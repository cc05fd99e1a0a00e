"""HNSW tuning: the FAISS sweep over M x efConstruction x ef on the real embeddings and a synthetic set, the rule
that picks a graph from it (``choose``), and the smallest ef reaching the recall target on a swept engine
(``final_ef``)."""

from __future__ import annotations

import gc

from rich.progress import Progress

from benchmarks.vector_search.data import Dataset, recall_at_k
from benchmarks.vector_search.engines import FaissHnsw
from benchmarks.vector_search.log import clock, console
from benchmarks.vector_search.measure import latency, singles
from benchmarks.vector_search.plan import RECALL_TARGET, TIE_BAND, TOP_K, Hnsw, Plan


def choose(rows: list[dict], keys: list[str], target: float = RECALL_TARGET) -> dict:
    """The sweep's pick over the data sets ``keys``. For every graph (M, efConstruction), its ef is the smallest
    (>= top_k) at which recall@10 reaches the target on every one of them; its search cost is the distance
    computations per query times the dimension, summed over them (what an HNSW search's time is made of, and
    deterministic where timings on a shared machine are not). The lowest cost wins; settings within TIE_BAND of it
    tie, and ties go to the graph that needs the smallest ef (the better-connected graph), then to the fastest
    build. No graph reaching the target: the best worst-case recall."""
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


def faiss_sweep(datasets: list[Dataset], plan: Plan, progress: Progress) -> dict:
    """FAISS HNSW over the grid M x efConstruction x ef on each data set: build time, recall@10, distance
    computations per query and nq=1 latency; the pick (``choose``) over all of them, and over the first alone."""
    import faiss

    rows: list[dict] = []
    grid = [(m, efc) for m in plan.sweep_m for efc in plan.sweep_efc]
    task = progress.add_task(f"HNSW sweep (FAISS, {len(grid)} graphs x {len(datasets)} data sets)",
                             total=len(grid) * len(datasets))
    for ds in datasets:
        one_each = singles(ds)
        for m, efc in grid:
            eng = FaissHnsw(ds, Hnsw(m, efc, TOP_K), chunk=plan.add_chunk)
            eng.load(progress)
            for ef in plan.sweep_ef:
                eng.set_ef(ef)
                faiss.cvar.hnsw_stats.reset()
                found = eng.search(ds.queries)
                ndis = faiss.cvar.hnsw_stats.ndis / len(ds.queries)
                lat = latency(eng.search, one_each, plan.ef_lat_n, plan.lat_max_s, progress,
                              f"{ds.key} M={m} efC={efc} ef={ef}", min_n=plan.ef_lat_n)
                rows.append({"dataset": ds.key, "dim": ds.dim, "M": m, "efConstruction": efc, "ef": ef,
                             "build_s": round(eng.insert_s, 2), "recall_at_10": round(recall_at_k(found, ds), 4),
                             "distances_per_query": round(ndis, 1), "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]})
            best = max((r for r in rows if r["dataset"] == ds.key and r["M"] == m and r["efConstruction"] == efc),
                       key=lambda r: r["recall_at_10"])
            console.print(f"{clock()} sweep {ds.key} M={m} efC={efc}: build {eng.insert_s:.1f} s, "
                          f"best recall {best['recall_at_10']:.4f}")
            eng.close()
            gc.collect()
            progress.advance(task)
    progress.remove_task(task)
    keys = [ds.key for ds in datasets]
    pick = choose(rows, keys)
    console.print(f"{clock()} [bold]sweep pick[/]: M={pick['M']} efC={pick['efConstruction']} ef={pick['ef']} "
                  f"(recall@10 {pick['recall_at_10']}, cost {pick['cost']:,})")
    return {"engine": "faiss_hnsw", "datasets": keys, "rows": rows, "pick": pick,
            "pick_first_only": choose(rows, keys[:1]), "target": RECALL_TARGET, "tie_band": TIE_BAND}


def final_ef(sweep: list[dict], target: float = RECALL_TARGET) -> tuple[int, bool]:
    """The smallest ef whose recall reaches the target (the lowest-latency one on a given graph)."""
    for r in sorted(sweep, key=lambda r: r["ef"]):
        if r["ef"] >= TOP_K and r["recall_at_10"] >= target:
            return r["ef"], True
    return max(r["ef"] for r in sweep), False

