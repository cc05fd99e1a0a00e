"""Where the gateway's time goes: py-spy samples its Python stacks during a row (collapsed-stack text, which
flamegraph.pl and speedscope read), and ``profile_summary`` lists the functions with the largest share."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.common import console

RATE_HZ = 200
# Frames every sample has (the interpreter's and the server's entry points): not where the time goes.
SKIP = ("runpy", "asyncio/runners.py", "base_events.py", "threading.py", "server/__main__.py", "server/app.py")


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy recording ``pid`` for ``seconds`` into ``out``, started (None when py-spy is not installed)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        console.print("[yellow]py-spy not found: no profile")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
                             str(RATE_HZ), "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def profile_summary(path: Path, top: int = 15) -> list[tuple[str, float]]:
    """The functions with the largest share of samples (inclusive: a function and what it calls)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            inclusive[frame] += int(n)
    rows = [(f, n / total) for f, n in inclusive.most_common() if not any(k in f for k in SKIP)]
    return [(f, round(share, 3)) for f, share in rows[:top]] if total else []
