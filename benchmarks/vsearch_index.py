"""``vsearch index`` run as a user runs it: ``python -m clients.cli index ...`` in a process of its own. Its defaults
are read from its ``--help``, its summary from what it prints at the end, and its CPU time is measured (``cpu``)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from benchmarks.cpu import run_measured

CLI = [sys.executable, "-m", "clients.cli"]
SHOWN = "python -m clients.cli index"  # how the command is shown in reports
DATASET = "fashion-mnist"


def _env() -> dict[str, str]:
    # Wide and plain: the help table and the summary each stay on their lines, with no colour codes in them.
    return {**os.environ, "COLUMNS": "1000", "NO_COLOR": "1", "TERM": "dumb"}


def index_defaults() -> tuple[int, int, bool]:
    """``vsearch index``'s default batch size, concurrency and resume flag, from its ``--help``."""
    text = subprocess.run([*CLI, "index", "--help"], capture_output=True, text=True, env=_env(), check=True,
                          timeout=120).stdout

    def default(flag: str) -> str:
        m = re.search(rf"(?m)^\W*{re.escape(flag)}\b.*?\[default: ([^\]]+)\]", text)
        if m is None:
            raise ValueError(f"no default for {flag} in `vsearch index --help`:\n{text}")
        return m.group(1).strip()

    return int(default("--batch-size")), int(default("--concurrency")), default("--resume") == "resume"


@dataclass(frozen=True)
class IndexRun:
    summary: dict  # what the command printed: model, total, indexed, skipped_existing, errors, seconds, images_per_s
    wall_s: float  # the command from start to exit (Python start-up and loading the data set included)
    cpu_s: float  # CPU seconds of the command's process


def parse_summary(output: str) -> dict:
    """The summary dict ``vsearch index`` prints last."""
    start = output.rfind("{'model':")
    if start < 0:
        raise ValueError(f"no summary in the output of vsearch index:\n{output[-2000:]}")
    return ast.literal_eval(output[start:].strip())


def index(address: str, model: str, limit: int, *, batch_size: int | None = None, concurrency: int | None = None,
          resume: bool | None = None, dataset: str = DATASET, timeout_s: float = 3600) -> IndexRun:
    """``vsearch index --dataset DATASET --limit LIMIT --model MODEL --address ADDRESS`` (plus the knobs given; the
    command's own defaults otherwise), to the end."""
    argv = [*CLI, "index", "--dataset", dataset, "--limit", str(limit), "--model", model, "--address", address]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if resume is not None:
        argv.append("--resume" if resume else "--no-resume")
    run = run_measured(argv, env=_env(), timeout_s=timeout_s)
    if run.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[2:])}` exited with {run.returncode}:\n{run.output[-2000:]}")
    return IndexRun(parse_summary(run.output), run.wall_s, run.cpu_s)
