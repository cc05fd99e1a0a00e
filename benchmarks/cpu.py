"""CPU time of processes during a measurement: the servers a benchmark started (``CpuMeter``) and a command it runs
as a user would (``run_measured``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

import psutil


class CpuMeter:
    """CPU seconds (user + system) of named process trees between ``start()`` and ``stop()``. The process running the
    benchmark is counted alone: the servers it launched are its children but are counted apart."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}

    def _sample(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            total = 0.0
            for q in [p] if p.pid == os.getpid() else [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = q.cpu_times()
                    total += t.user + t.system
            out[name] = total
        return out

    def start(self) -> None:
        self.t0 = self._sample()

    def stop(self) -> dict[str, float]:
        t1 = self._sample()
        return {k: round(t1[k] - self.t0[k], 6) for k in t1}


@dataclass(frozen=True)
class ProcessRun:
    returncode: int
    output: str  # stdout and stderr together
    wall_s: float  # from the start of the process until it exited (Python start-up included)
    cpu_s: float  # user + system CPU of the process over its whole life, and of the children it waited for


def run_measured(argv: list[str], env: dict[str, str] | None = None, timeout_s: float = 3600.0) -> ProcessRun:
    """Runs ``argv`` to the end and measures it. Its CPU times are read once it has exited but before it is reaped
    (``waitid`` with ``WNOWAIT``: the exited process still has its ``/proc`` entry), so nothing it did is missed."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = t0 + timeout_s
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{' '.join(argv)} did not finish within {timeout_s:.0f} s")
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            t = psutil.Process(proc.pid).cpu_times()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        out.seek(0)
        text = out.read()
    return ProcessRun(proc.returncode, text, wall, t.user + t.system + t.children_user + t.children_system)
