"""``make bench``: every benchmark, one after the other, on this machine, then BENCHMARKS.md.

    python -m benchmarks.run                      # full: benchmarks/results/*.json and BENCHMARKS.md
    python -m benchmarks.run --quick              # smoke: build/bench-quick/*.json and build/bench-quick/BENCHMARKS.md
    python -m benchmarks.run --only ingest        # one (or several) of them; the report is rebuilt from all results

A benchmark that fails is reported (traceback) and the others still run; the exit status is then 1. Quick results
never land in benchmarks/results/: unless VSEARCH_BENCH_RESULTS already points elsewhere, they go to build/bench-quick/.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from benchmarks import common, report
from benchmarks.report import ORDER

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = ROOT / "build" / "bench-quick"


def results_dir(quick: bool) -> Path:
    """Where results go: VSEARCH_BENCH_RESULTS when set, else the committed folder; quick runs never go there."""
    env = os.environ.get("VSEARCH_BENCH_RESULTS")
    chosen = Path(env).resolve() if env else COMMITTED_RESULTS
    return QUICK_RESULTS if quick and chosen == COMMITTED_RESULTS else chosen


def main(argv: list[str] | None = None, **options) -> int:
    """``options`` go to every benchmark's ``run`` (``python -m benchmarks.vector_search --lite-1m``)."""
    p = argparse.ArgumentParser(description="Runs the benchmarks, then writes the report.")
    p.add_argument("--quick", action="store_true", help="bounded smoke runs; results in build/bench-quick/")
    p.add_argument("--only", nargs="+", choices=ORDER, metavar="NAME", help=f"run only these ({', '.join(ORDER)})")
    a = p.parse_args(argv)

    # Set before any benchmark module is imported: some read the results folder at import time.
    out = results_dir(a.quick)
    os.environ["VSEARCH_BENCH_RESULTS"] = str(out)
    common.RESULTS = out
    print(f"results in {out}", flush=True)

    failed: list[str] = []
    for name in [n for n in ORDER if not a.only or n in a.only]:
        print(f"\n=== {name} ({'quick' if a.quick else 'full'}) ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").run(quick=a.quick, **options)
        except Exception:  # noqa: BLE001 - one failing benchmark must not stop the others
            traceback.print_exc()
            failed.append(name)
            print(f"=== {name} FAILED after {time.perf_counter() - t0:.0f} s ===", flush=True)
        else:
            print(f"=== {name} done in {time.perf_counter() - t0:.0f} s ===", flush=True)

    print(f"report written to {report.write()}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cli(argv: list[str] | None = None, **options) -> None:
    """``main`` as a command: SIGTERM unwinds like Ctrl+C, so every server a benchmark started is stopped."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sys.exit(main(argv, **options))


if __name__ == "__main__":
    cli()
