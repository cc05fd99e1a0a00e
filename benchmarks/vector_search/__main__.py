"""``python -m benchmarks.vector_search [--quick] [--lite-1m] [--skip-1m]``: ``python -m benchmarks.run --only
vector_search`` with the 1M options."""

import argparse

from benchmarks.run import cli

p = argparse.ArgumentParser(prog="python -m benchmarks.vector_search")
p.add_argument("--quick", action="store_true", help="small sets, small sweep (a smoke run, under 90 s)")
p.add_argument("--lite-1m", action="store_true", help="also run Milvus Lite at 1M (slow)")
p.add_argument("--skip-1m", action="store_true", help="leave out the 1M synthetic rows")
a = p.parse_args()
cli(["--only", "vector_search", *(["--quick"] if a.quick else [])], lite_1m=a.lite_1m, skip_1m=a.skip_1m)
