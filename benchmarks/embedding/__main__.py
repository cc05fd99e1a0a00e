"""``python -m benchmarks.embedding [--quick] [--models NAME ...]``."""

from __future__ import annotations

import argparse

from benchmarks.embedding import __doc__ as DOC
from benchmarks.embedding.benchmark import run
from benchmarks.embedding.plan import MODELS


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.embedding", description=DOC.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the Fashion-MNIST ViT, short timings (smoke run)")
    p.add_argument("--models", nargs="+", help=f"default: {', '.join(MODELS)}")
    a = p.parse_args()
    run(a.quick, a.models)


if __name__ == "__main__":
    main()
