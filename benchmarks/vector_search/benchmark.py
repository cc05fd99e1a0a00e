"""The run: pass 1 tunes HNSW (FAISS sweep, then the Milvus server swept over ef on every data set), pass 2 measures
every engine at the chosen parameters."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks.common import MILVUS_SETTLE_S, write_result
from benchmarks.vector_search.data import Dataset, size_label, synthetic_sets, with_ground_truth
from benchmarks.vector_search.engines import Engine, FaissFlat, FaissHnsw
from benchmarks.vector_search.log import clock, console, make_progress, reset_clock
from benchmarks.vector_search.measure import ef_sweep, measure, measure_and_close
from benchmarks.vector_search.milvus_engine import MilvusEngine, Servers
from benchmarks.vector_search.plan import (
    BATCH_NQ,
    CURRENT,
    LITE_1M_REASON,
    NAME,
    RECALL_TARGET,
    TIE_EPS,
    TOP_K,
    Hnsw,
    make_plan,
)
from benchmarks.vector_search.real import real_embeddings
from benchmarks.vector_search.section import print_result
from benchmarks.vector_search.sweep import faiss_sweep, final_ef
from server.settings import Settings

_ENGINE_ORDER = {"faiss_flat": 0, "faiss_hnsw": 1, "milvus_server": 2, "milvus_lite": 4}


def _row_order(datasets: list[str]) -> Callable[[dict], tuple]:
    return lambda r: (datasets.index(r["dataset"]), _ENGINE_ORDER[r["engine"]] + (r["role"] == "tuned" and
                                                                                    r["engine"] == "milvus_server"))


def run(quick: bool = False, lite_1m: bool = False, skip_1m: bool = False, settings: Settings | None = None) -> dict:
    """Pass 1 (tuning): exact reference and FAISS sweep on the real embeddings, which picks M and efConstruction;
    the Milvus server with the current defaults on the real embeddings; then a Milvus server collection with the
    picked graph for every data set, each swept over ef. The chosen ef is the smallest that reaches the recall
    target on every data set. Pass 2: every engine measured at the chosen parameters. The Milvus stores run with
    ``settings`` (default: ``Settings()``, from the environment) and each engine's HNSW parameters."""
    import faiss

    from launchers.milvus import milvus_version

    settings = settings or Settings()
    plan = make_plan(quick, lite_1m, skip_1m)
    t_start = reset_clock()
    result: dict = {"quick": quick, "top_k": TOP_K, "batch_nq": BATCH_NQ, "recall_target": RECALL_TARGET,
                    "plan": asdict(plan), "faiss_version": faiss.__version__,
                    "faiss_threads": faiss.omp_get_max_threads(), "milvus_version": milvus_version(),
                    "current_defaults": CURRENT.as_dict(), "upsert_rows": settings.milvus_write_batch_rows,
                    "settle_quiet_s": MILVUS_SETTLE_S, "tie_eps": TIE_EPS,
                    "datasets": {}, "engines": [],
                    "lite_1m": 1_000_000 in plan.lite_sizes,
                    "lite_1m_reason": None if 1_000_000 in plan.lite_sizes or quick or skip_1m else LITE_1M_REASON}
    rows: list[dict] = result["engines"]
    real = real_embeddings(plan)  # before the progress display: embedding draws its own bars
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vsearch-bench-")))
        servers = Servers(stack, tmp, plan.shared_server)
        progress = stack.enter_context(make_progress())

        def server_engine(ds: Dataset, hnsw: Hnsw, label: str, tag: str) -> MilvusEngine:
            engine = MilvusEngine(ds, hnsw, (srv := servers.start(ds.key + tag)).uri, settings, srv, label=label,
                                  collection_tag=tag, settle=plan.settle)
            stack.callback(engine.store.close)  # on errors: the client closed before its server stops
            return engine

        def sweep_ef(engine: Engine) -> list[dict]:
            return ef_sweep(engine, plan.sweep_ef, plan.ef_lat_n, plan.lat_max_s, progress)

        # -- pass 1: tuning ---------------------------------------------------------------------------------
        datasets: dict[str, Dataset] = {"real": with_ground_truth(real, progress)}
        for ds in synthetic_sets(plan, progress):
            datasets[ds.key] = ds
        for key, ds in datasets.items():
            result["datasets"][key] = ds.describe()
        rows.append(measure_and_close(FaissFlat(real), plan, progress))
        current = None
        if plan.overlap_milvus:  # quick: its index build overlaps the FAISS sweep
            current = server_engine(real, CURRENT, "Milvus server (current defaults)", "_cur")
            current.load(progress)
            current.seal()
        swept = [real, datasets[f"synthetic_{size_label(min(plan.synth_sizes))}"]]
        sweep = result["sweep"] = faiss_sweep(swept, plan, progress)
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
                    tuned_engine(key).load(progress)
                    tuned_engine(key).seal()
        ef_sweeps: dict[str, list[dict]] = {}

        def sweep_current(e: Engine) -> None:
            ef_sweeps["real_current"] = sweep_ef(e)
            e.set_ef(CURRENT.ef)

        rows.append(measure(current, plan, progress, role="current", before=sweep_current))
        if not same_graph:
            current.close()
            servers.stop(current.server)
        for key in tuned:
            engine = tuned_engine(key)
            if engine is current:
                ef_sweeps[key] = ef_sweeps["real_current"]
                continue
            if math.isnan(engine.insert_end):
                engine.load(progress)
            engine.wait_built(progress)
            ef_sweeps[key] = sweep_ef(engine)
            console.print(f"{clock()} {key}: Milvus reaches recall@{TOP_K} >= {RECALL_TARGET} from ef="
                          f"{final_ef(ef_sweeps[key])[0]}")
        needed = {key: final_ef(ef_sweeps[key]) for key in tuned}
        chosen = Hnsw(graph.m, graph.ef_construction, max(ef for ef, _ in needed.values()))
        result["milvus_ef_sweep"] = {
            "current": {"dataset": "real", "hnsw": CURRENT.as_dict(), "rows": ef_sweeps["real_current"]},
            "tuned": {key: {"hnsw": chosen.as_dict(), "rows": ef_sweeps[key], "smallest_ef": ef, "reached": ok}
                      for key, (ef, ok) in needed.items()}}
        at_ef = {key: next(r for r in ef_sweeps[key] if r["ef"] == chosen.ef) for key in tuned}
        result["recommended"] = {
            "hnsw_m": chosen.m, "hnsw_ef_construction": chosen.ef_construction, "hnsw_ef": chosen.ef,
            "faiss_pick_ef": graph.ef, "smallest_ef_per_dataset": {key: ef for key, (ef, _) in needed.items()},
            "milvus_recall_at_10": at_ef["real"]["recall_at_10"], "milvus_nq1_p50_ms": at_ef["real"]["p50_ms"],
            "meets_target": bool(pick["meets_target"] and all(ok for _, ok in needed.values()))}
        console.print(f"{clock()} [bold]recommended[/]: hnsw_m={chosen.m} hnsw_ef_construction="
                      f"{chosen.ef_construction} hnsw_ef={chosen.ef} (smallest ef per data set: "
                      f"{result['recommended']['smallest_ef_per_dataset']})")

        # -- pass 2: every engine at the chosen parameters ---------------------------------------------------
        for key in sorted(tuned, key=lambda k: -datasets[k].n):  # largest first: frees the most memory
            engine = tuned_engine(key)
            engine.label = "Milvus server"
            rows.append(measure(engine, plan, progress, role="tuned", before=lambda e: e.set_ef(chosen.ef)))
            engine.close()
            servers.stop(engine.server)
        for key, ds in datasets.items():
            if key != "real":
                rows.append(measure_and_close(FaissFlat(ds), plan, progress))
            rows.append(measure_and_close(FaissHnsw(ds, chosen, chunk=plan.add_chunk), plan, progress, role="tuned"))
            if key == "real" or ds.n in plan.lite_sizes:
                lite = MilvusEngine(ds, chosen, str(tmp / f"lite_{key}" / "bench.db"), settings)
                rows.append(measure_and_close(lite, plan, progress, role="tuned"))
        rows.sort(key=_row_order(list(datasets)))
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    print_result(result)
    console.print(f"written to {write_result(NAME, result)} ({result['wall_s']:.0f} s)")
    return result

