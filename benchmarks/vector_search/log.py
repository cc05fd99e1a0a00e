"""The run's log: the benchmarks' console (re-exported), progress bars, and the run's clock."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from benchmarks.common import console

_T0 = [time.perf_counter()]


def reset_clock() -> float:
    """Starts the run's clock; returns when (perf_counter)."""
    _T0[0] = time.perf_counter()
    return _T0[0]


def clock() -> str:
    """Time since the run started, for the log lines."""
    return f"[dim]{time.perf_counter() - _T0[0]:6.0f} s[/]"


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)
