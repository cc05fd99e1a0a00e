"""The ingest benchmark's fixed figures: the knob settings compared, and the wait after a delete."""

from __future__ import annotations

from benchmarks.vsearch_index import DATASET

NAME = "ingest"
__all__ = ["AFTER_DELETE_WAIT_S", "DATASET", "NAME", "QUICK_SWEEP", "SWEEP"]
# (batch size, concurrent streams, resume check) compared on a subset; the CLI defaults are always added.
SWEEP = ((64, 4, True), (128, 4, True), (64, 8, True), (64, 2, True), (64, 4, False))
QUICK_SWEEP = ((128, 4, True), (64, 4, False))
# After a delete the gateway reads Strong for 6 s (server/vector_store/milvus.py); wait it out so the resume check
# of the next run costs what it costs on a collection nobody just deleted from.
AFTER_DELETE_WAIT_S = 6.5
