"""``python -m benchmarks.vector_search [--quick] [--lite-1m] [--skip-1m]``."""

from __future__ import annotations

import argparse
import signal
import sys

from benchmarks.vector_search import __doc__ as DOC
from benchmarks.vector_search.benchmark import run
from benchmarks.vector_search.log import clock, console


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vector_search", description=DOC.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets, small sweep (a smoke run, under 90 s)")
    parser.add_argument("--lite-1m", action="store_true", help="also run Milvus Lite at 1M")
    parser.add_argument("--skip-1m", action="store_true", help="leave out the 1M synthetic rows")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl+C, so every Milvus server this run started is stopped on the way out.
    def terminate(signum, frame):
        console.print(f"{clock()} [red]signal {signum}: stopping the Milvus servers and exiting[/]")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    run(args.quick, lite_1m=args.lite_1m, skip_1m=args.skip_1m)


if __name__ == "__main__":
    main()
