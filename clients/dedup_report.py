"""``vsearch dedup``: the duplicate groups of a collection (FindDuplicates) with a progress bar, written as
``duplicates.json`` (every group) and ``duplicates.html`` (the largest groups, thumbnails side by side, as
imagededup's ``plot_duplicates`` shows them; capped so the page stays small)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clients.results import resolve_image
from clients.sdk import SearchClient

MAX_GROUPS_SHOWN = 100
MAX_THUMBNAILS_PER_GROUP = 12
THUMBNAIL_SIDE = 96


def find_groups(client: SearchClient, model: str, verdict: str | None, min_score: float | None,
                neighbours: int = 0) -> tuple[list[dict], dict]:
    """([{"ids", "max_score"}, ...] largest first, the summary), with a progress bar while the gateway scans."""
    groups: list[dict] = []
    summary: dict = {}
    with Progress(TextColumn(f"[bold]finding duplicates in {model}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as progress:
        task = progress.add_task("scan", total=None)
        for event in client.find_duplicates(model, min_score=min_score, min_verdict=verdict, neighbours=neighbours):
            if event.progress is not None:
                progress.update(task, completed=event.progress[0], total=event.progress[1])
            elif event.group is not None:
                groups.append({"ids": event.group[0], "max_score": round(float(event.group[1]), 6)})
            elif event.summary is not None:
                summary = event.summary
    return groups, summary


def write_json(path: Path, model: str, groups: list[dict], summary: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model, "summary": summary, "groups": groups}, indent=1))
    return path


def _thumbnail(item_id: str, image_root: Path | None) -> str:
    image = resolve_image(item_id, image_root)
    if image is None:
        return "<div class='missing'>no image</div>"
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    if min(image.size) < THUMBNAIL_SIDE // 2:  # Fashion-MNIST's 28 px: upscale so it can be seen
        scale = THUMBNAIL_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return f"<img src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def write_html(path: Path, model: str, groups: list[dict], summary: dict, image_root: Path | None = None) -> Path:
    shown = groups[:MAX_GROUPS_SHOWN]
    parts = ["<!doctype html><meta charset='utf-8'><title>duplicates</title>",
             "<style>body{font-family:sans-serif;margin:1em}.g{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 18px}"
             "figure{margin:0;font-size:11px;max-width:100px;word-break:break-all}.missing{width:96px;height:96px;"
             "background:#eee}</style>",
             f"<h1>Duplicate groups in {html.escape(model)}</h1>",
             f"<p>{summary.get('groups', len(groups))} groups, {summary.get('pairs', '?')} pairs among "
             f"{summary.get('items', '?')} items at score &gt;= {summary.get('min_score', 0):.4f}, found in "
             f"{summary.get('elapsed_s', 0):.1f} s. Showing the {len(shown)} largest"
             f"{'' if len(shown) == len(groups) else ' (all are in duplicates.json)'}.</p>"]
    for n, g in enumerate(shown, 1):
        ids = g["ids"]
        parts.append(f"<h3>group {n}: {len(ids)} items, best pair {g['max_score']:.4f}</h3><div class='g'>")
        for item_id in ids[:MAX_THUMBNAILS_PER_GROUP]:
            parts.append(f"<figure>{_thumbnail(item_id, image_root)}<figcaption>{html.escape(item_id)}"
                         "</figcaption></figure>")
        if len(ids) > MAX_THUMBNAILS_PER_GROUP:
            parts.append(f"<p>... and {len(ids) - MAX_THUMBNAILS_PER_GROUP} more</p>")
        parts.append("</div>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
