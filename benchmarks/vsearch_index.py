"""``vsearch index`` run as a user runs it (``python -m clients.cli index``, a process of its own: defaults read from
its ``--help``, summary from its output, CPU time measured), and the stub calls around it: counting and deleting."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import grpc

from benchmarks.cpu import ProcessRun, run_measured
from visualsearch.v1 import search_pb2 as pb
from visualsearch.v1 import search_pb2_grpc

CLI = [sys.executable, "-m", "clients.cli"]
SHOWN = "python -m clients.cli index"  # how the command is shown in reports
DATASET = "fashion-mnist"
TIMEOUT_S = 60.0  # per stub call


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


def parse_summary(output: str) -> dict:
    """The summary dict ``vsearch index`` prints last."""
    start = output.rfind("{'model':")
    if start < 0:
        raise ValueError(f"no summary in the output of vsearch index:\n{output[-2000:]}")
    return ast.literal_eval(output[start:].strip())


def index(address: str, model: str, limit: int, *, batch_size: int | None = None, concurrency: int | None = None,
          resume: bool | None = None) -> tuple[dict, ProcessRun]:
    """``vsearch index --dataset DATASET --limit LIMIT --model MODEL --address ADDRESS`` (plus the knobs given; the
    command's own defaults otherwise), to the end: its summary, and the measured process."""
    argv = [*CLI, "index", "--dataset", DATASET, "--limit", str(limit), "--model", model, "--address", address]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if resume is not None:
        argv.append("--resume" if resume else "--no-resume")
    run = run_measured(argv, env=_env())
    if run.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[2:])}` exited with {run.returncode}:\n{run.output[-2000:]}")
    return parse_summary(run.output), run


def stored_items(address: str, model: str) -> int:
    """How many items the gateway says ``model``'s collection holds (0 when it does not serve the model)."""
    with grpc.insecure_channel(address) as channel:
        reply = search_pb2_grpc.SearchServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=TIMEOUT_S)
    return next((m.count for m in reply.models if m.name == model), 0)


def delete(address: str, model: str, ids: list[str], chunk: int = 1000) -> int:
    """Deletes ``ids`` from ``model``'s collection, ``chunk`` ids per call; returns how many were deleted."""
    deleted = 0
    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for i in range(0, len(ids), chunk):
            deleted += stub.Delete(pb.DeleteRequest(model=model, ids=ids[i:i + chunk]), timeout=TIMEOUT_S).deleted
    return deleted
