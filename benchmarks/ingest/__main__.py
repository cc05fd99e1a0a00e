"""``python -m benchmarks.ingest [--quick] [--images N] [--sweep-images N] [--rounds N]``."""

from __future__ import annotations

import argparse

from benchmarks.ingest import __doc__ as DOC
from benchmarks.ingest.benchmark import run


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=DOC.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 images, knobs on 1,000 (a smoke run)")
    p.add_argument("--images", type=int, help="images in the headline run (default 70,000; quick 2,000)")
    p.add_argument("--sweep-images", type=int, help="images per knob setting (default 10,000; quick 1,000)")
    p.add_argument("--rounds", type=int, help="rounds over the knob settings (default 2; quick 1)")
    a = p.parse_args()
    run(a.quick, a.images, a.sweep_images, a.rounds)


if __name__ == "__main__":
    main()
