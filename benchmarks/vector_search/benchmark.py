"""The run. Pass 1 tunes HNSW: the FAISS sweep on the real embeddings and the smallest synthetic set picks M and
efConstruction, the Milvus server is measured with the current defaults, then the picked graph is swept over ef on every
data set and the chosen ef is the smallest reaching the target on all. Pass 2 measures every engine with it."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import common
from benchmarks.common import MILVUS_SETTLE_S, console, finish
from benchmarks.vector_search import plan as protocol
from benchmarks.vector_search.data import Dataset, real_embeddings, size_label, synthetic_sets, with_ground_truth
from benchmarks.vector_search.engines import Engine, FaissFlat, FaissHnsw, MilvusEngine, Servers
from benchmarks.vector_search.measure import ef_sweep, measure, measure_and_close
from benchmarks.vector_search.plan import CURRENT, NAME, TOP_K, Hnsw
from benchmarks.vector_search.sweep import faiss_sweep, final_ef
from server.settings import Settings

# The rows' order in the tables: per data set, exact first, then FAISS HNSW, the Milvus server (current, then tuned).
_ENGINE_ORDER = {"faiss_flat": 0, "faiss_hnsw": 1, "milvus_server": 2, "milvus_lite": 4}


def run(quick: bool = False, lite_1m: bool = False, skip_1m: bool = False) -> dict:
    """Both passes; the Milvus stores run with ``Settings()`` and each engine's HNSW parameters."""
    import faiss

    from launchers.milvus import milvus_version

    settings = Settings()
    plan = protocol.make_plan(quick, lite_1m, skip_1m)
    t_start = time.perf_counter()
    lite_at_1m = 1_000_000 in plan.lite_sizes
    result: dict = {"quick": quick, "top_k": TOP_K, "batch_nq": protocol.BATCH_NQ,
                    "recall_target": protocol.RECALL_TARGET, "plan": asdict(plan), "faiss_version": faiss.__version__,
                    "faiss_threads": faiss.omp_get_max_threads(), "milvus_version": milvus_version(),
                    "current_defaults": CURRENT.as_dict(), "upsert_rows": settings.milvus_write_batch_rows,
                    "settle_quiet_s": MILVUS_SETTLE_S, "tie_eps": protocol.TIE_EPS, "datasets": {}, "engines": [],
                    "lite_1m": lite_at_1m,
                    "lite_1m_reason": None if lite_at_1m or quick or skip_1m else protocol.LITE_1M_REASON}
    rows: list[dict] = result["engines"]
    real = real_embeddings(plan)  # before the progress display: embedding draws its own bars
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vsearch-bench-")))
        servers = Servers(stack, tmp, plan.shared_server)
        stack.enter_context(common.PROGRESS)

        def server_engine(ds: Dataset, hnsw: Hnsw, label: str, tag: str) -> MilvusEngine:
            engine = MilvusEngine(ds, hnsw, (srv := servers.start(ds.key + tag)).uri, settings, srv, label=label,
                                  collection_tag=tag, settle=plan.settle)
            stack.callback(engine.store.close)  # on errors: the client closed before its server stops
            return engine

        # -- pass 1: tuning ---------------------------------------------------------------------------------
        datasets = {ds.key: ds for ds in [with_ground_truth(real), *synthetic_sets(plan)]}
        result["datasets"] = {key: ds.describe() for key, ds in datasets.items()}
        rows.append(measure_and_close(FaissFlat(real), plan))
        current = None
        if plan.overlap_milvus:  # quick: its index build overlaps the FAISS sweep
            current = server_engine(real, CURRENT, "Milvus server (current defaults)", "_cur")
            current.load()
            current.seal()
        swept = [real, datasets[f"synthetic_{size_label(min(plan.synth_sizes))}"]]
        sweep = result["sweep"] = faiss_sweep(swept, plan)
        pick = sweep["pick"]
        graph = Hnsw(pick["M"], pick["efConstruction"], pick["ef"])
        same_graph = (graph.m, graph.ef_construction) == (CURRENT.m, CURRENT.ef_construction)
        current = current or server_engine(real, CURRENT, "Milvus server (current defaults)", "_cur")
        tuned: dict[str, MilvusEngine | None] = {key: current if key == "real" and same_graph else None
                                                 for key in datasets}

        def tuned_engine(key: str) -> MilvusEngine:
            """The data set's collection with the picked graph (its server started when first asked for)."""
            if tuned[key] is None:
                tuned[key] = server_engine(datasets[key], graph, "Milvus server", "")
            return tuned[key]

        if plan.overlap_milvus:  # quick: every collection inserted first, so their index builds overlap
            for key in tuned:
                if math.isnan(tuned_engine(key).insert_end):
                    tuned_engine(key).load()
                    tuned_engine(key).seal()
        ef_sweeps: dict[str, list[dict]] = {}

        def sweep_current(e: Engine) -> None:
            ef_sweeps["real_current"] = ef_sweep(e, plan)
            e.set_ef(CURRENT.ef)

        rows.append(measure(current, plan, role="current", before=sweep_current))
        if not same_graph:
            current.close()
            servers.stop(current.server)
        for key in tuned:
            engine = tuned_engine(key)
            if engine is current:
                ef_sweeps[key] = ef_sweeps["real_current"]
                continue
            if math.isnan(engine.insert_end):
                engine.load()
            engine.wait_built()
            ef_sweeps[key] = ef_sweep(engine, plan)
            console.log(f"{key}: Milvus reaches recall@{TOP_K} >= {protocol.RECALL_TARGET} from ef="
                        f"{final_ef(ef_sweeps[key])[0]}")
        needed = {key: final_ef(ef_sweeps[key]) for key in tuned}
        chosen = Hnsw(graph.m, graph.ef_construction, max(ef for ef, _ in needed.values()))
        result["milvus_ef_sweep"] = {
            "current": {"dataset": "real", "hnsw": CURRENT.as_dict(), "rows": ef_sweeps["real_current"]},
            "tuned": {key: {"hnsw": chosen.as_dict(), "rows": ef_sweeps[key], "smallest_ef": ef, "reached": ok}
                      for key, (ef, ok) in needed.items()}}
        at_ef = {key: next(r for r in ef_sweeps[key] if r["ef"] == chosen.ef) for key in tuned}
        rec = result["recommended"] = {
            "hnsw_m": chosen.m, "hnsw_ef_construction": chosen.ef_construction, "hnsw_ef": chosen.ef,
            "faiss_pick_ef": graph.ef, "smallest_ef_per_dataset": {key: ef for key, (ef, _) in needed.items()},
            "milvus_recall_at_10": at_ef["real"]["recall_at_10"], "milvus_nq1_p50_ms": at_ef["real"]["p50_ms"],
            "meets_target": bool(pick["meets_target"] and all(ok for _, ok in needed.values()))}
        console.log(f"[bold]recommended[/]: hnsw_m={chosen.m} hnsw_ef_construction={chosen.ef_construction} "
                    f"hnsw_ef={chosen.ef} (smallest ef per data set: {rec['smallest_ef_per_dataset']})")

        # -- pass 2: every engine at the chosen parameters ---------------------------------------------------
        for key in sorted(tuned, key=lambda k: -datasets[k].n):  # largest first: frees the most memory
            engine = tuned_engine(key)
            engine.label = "Milvus server"
            rows.append(measure(engine, plan, role="tuned", before=lambda e: e.set_ef(chosen.ef)))
            engine.close()
            servers.stop(engine.server)
        for key, ds in datasets.items():
            if key != "real":
                rows.append(measure_and_close(FaissFlat(ds), plan))
            rows.append(measure_and_close(FaissHnsw(ds, chosen, chunk=plan.add_chunk), plan, role="tuned"))
            if key == "real" or ds.n in plan.lite_sizes:
                lite = MilvusEngine(ds, chosen, str(tmp / f"lite_{key}" / "bench.db"), settings)
                rows.append(measure_and_close(lite, plan, role="tuned"))
        keys = list(datasets)
        rows.sort(key=lambda r: (keys.index(r["dataset"]), _ENGINE_ORDER[r["engine"]]
                                 + (r["role"] == "tuned" and r["engine"] == "milvus_server")))
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return finish(NAME, result)

