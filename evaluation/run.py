"""Runs the comparison protocol, then writes its report: ``python -m evaluation.run [--quick] [--extractor NAME]``.

The one module that imports both ``evaluation.protocol`` and ``evaluation.report``, so neither imports the other."""

from __future__ import annotations

from pathlib import Path

import torch

from evaluation import protocol
from evaluation.names import DEFAULT_OUT
from evaluation.refresh import refresh_extractors
from evaluation.report import write_report


def run(extractors: list[str] | None = None, quick: bool = False, out_dir: Path = DEFAULT_OUT, seed: int = 0,
        report: bool = True, merge: bool = False) -> Path:
    """Measures ``extractors`` (default: ``protocol.DEFAULT_EXTRACTORS``) into ``out_dir/results.json`` - or, with
    ``merge``, re-measures only them into the existing one - then writes the report; returns ``out_dir``'s
    ``report.md`` (or ``results.json`` without ``report``)."""
    if merge:
        if not extractors:
            raise ValueError("merge re-measures the extractors it is given: name at least one")
        refresh_extractors(extractors, out_dir, seed)
    else:
        protocol.run_protocol(extractors, quick, out_dir, seed)
    return write_report(out_dir) if report else Path(out_dir) / "results.json"


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=protocol.__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--extractor", action="append", help="registry name, e.g. 'pixels' (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--merge", action="store_true", help="re-measure only --extractor into OUT/results.json")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    run(a.extractor, a.quick, a.out, a.seed, report=not a.no_report, merge=a.merge)


if __name__ == "__main__":
    main()
