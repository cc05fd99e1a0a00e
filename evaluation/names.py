"""Names the protocol, the report and whoever runs both share (a module of its own, so none imports another to
get them)."""

from pathlib import Path

DEFAULT_OUT = Path("reports/comparison")  # results.json, report.md/html, figures/
