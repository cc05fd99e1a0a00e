"""``python -m benchmarks.gateway_search [--quick] [--n-index N] [--seconds S] [--concurrency C ...] ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.gateway_search import __doc__ as DOC
from benchmarks.gateway_search.benchmark import run


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gateway_search", description=DOC.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n-index", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--concurrency", type=int, nargs="+")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="py-spy profile of the gateway at the headline row (default: on in full runs)")
    p.add_argument("--data-dir", type=Path, help="Milvus data dir to reuse (default benchmarks/cache/milvus-fmnist)")
    a = p.parse_args()
    run(a.quick, a.n_index, a.seconds, tuple(a.concurrency) if a.concurrency else None, a.profile, a.data_dir)


if __name__ == "__main__":
    main()
