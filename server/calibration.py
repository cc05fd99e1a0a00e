"""A model's score calibration: the one definition of ``calibration.json`` and of the verdict rule.

``vsearch calibrate`` (``evaluation/calibration.py``) fits, per model, the lowest cosine score at which a pair is
called ``EXACT`` (the same image up to re-encoding) and ``NEAR_DUPLICATE`` (an edited copy) at a target precision,
and writes them here as a versioned JSON document into ``weights/<model>/``; export copies it beside the model in
the Triton repository, where the gateway reads it (``<model_repository>/<model>/calibration.json``).

A score ``s`` gets ``EXACT`` when ``s >= exact.min_score``, else ``NEAR_DUPLICATE`` when
``s >= near_duplicate.min_score``, else ``SIMILAR``. A file that is missing, unreadable, of another format
version or fitted for another model gives no calibration and a note saying why: the model then serves plain
search with verdicts unset."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from extractors.served_files import CALIBRATION_FILE

FORMAT = "visualsearch.calibration"
FORMAT_VERSION = 1
# Verdict names, weakest first (the proto's Verdict enum values carry the same names).
SIMILAR, NEAR_DUPLICATE, EXACT = "SIMILAR", "NEAR_DUPLICATE", "EXACT"
CALIBRATED_VERDICTS = (NEAR_DUPLICATE, EXACT)


class CalibrationInvalid(ValueError):
    """The document is not a usable calibration (the message says why)."""


@dataclass(frozen=True)
class Threshold:
    """Pairs scoring >= ``min_score`` get the verdict; ``precision`` and ``recall`` measured on the fit's pairs."""

    min_score: float
    precision: float
    recall: float


@dataclass(frozen=True)
class Calibration:
    model: str
    exact: Threshold
    near_duplicate: Threshold
    target_precision: float
    fitted_utc: str
    fitted_on: dict = field(default_factory=dict)  # what the pairs were: data set, counts, levels

    @property
    def version(self) -> str:
        """Identifies this fit: the format version and when it was fitted."""
        return f"{FORMAT_VERSION}@{self.fitted_utc}"

    def verdict(self, score: float) -> str:
        if score >= self.exact.min_score:
            return EXACT
        if score >= self.near_duplicate.min_score:
            return NEAR_DUPLICATE
        return SIMILAR

    def bound(self, verdict: str) -> float | None:
        """The lowest score with ``verdict`` or better (None for SIMILAR: any score)."""
        if verdict == EXACT:
            return self.exact.min_score
        if verdict == NEAR_DUPLICATE:
            return self.near_duplicate.min_score
        return None

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model, "metric": "COSINE",
                "target_precision": self.target_precision, "fitted_utc": self.fitted_utc,
                "thresholds": {"exact": asdict(self.exact), "near_duplicate": asdict(self.near_duplicate)},
                "fitted_on": self.fitted_on}


def parse(doc: object, model: str) -> Calibration:
    """The calibration in ``doc`` (parsed JSON) for ``model``; CalibrationInvalid says what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationInvalid(f"is not a calibration file (no \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CalibrationInvalid(f"has format version {doc.get('format_version')!r}; this gateway reads "
                                 f"{FORMAT_VERSION}: rerun `vsearch calibrate`")
    if doc.get("model") != model:
        raise CalibrationInvalid(f"was fitted for model {str(doc.get('model'))[:100]!r}, not {model!r}")
    if doc.get("metric", "COSINE") != "COSINE":
        raise CalibrationInvalid(f"was fitted for metric {doc.get('metric')!r}; the store ranks by COSINE")
    try:
        thresholds = doc["thresholds"]
        exact, near = (_threshold(thresholds[k], k) for k in ("exact", "near_duplicate"))
        target = float(doc["target_precision"])
        fitted = str(doc["fitted_utc"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationInvalid(f"is malformed: {type(exc).__name__}: {exc}") from exc
    if near.min_score > exact.min_score:
        raise CalibrationInvalid(f"has a near_duplicate bound {near.min_score} above its exact bound "
                                 f"{exact.min_score}")
    return Calibration(model, exact, near, target, fitted, dict(doc.get("fitted_on") or {}))


def _threshold(raw: dict, name: str) -> Threshold:
    t = Threshold(float(raw["min_score"]), float(raw["precision"]), float(raw["recall"]))
    if not (math.isfinite(t.min_score) and -1.0 <= t.min_score <= 1.0):
        raise ValueError(f"{name}.min_score {t.min_score} is not a cosine score in [-1, 1]")
    return t


def load(path: Path, model: str) -> Calibration:
    """The calibration at ``path``: FileNotFoundError when there is none, CalibrationInvalid when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CalibrationInvalid(f"is unreadable: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CalibrationInvalid(f"is not valid JSON: {exc}") from exc
    return parse(doc, model)


def write(calibration: Calibration, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_json(), indent=1) + "\n")
    return path


@dataclass(frozen=True)
class Loaded:
    """What the gateway knows of a model's calibration: the calibration, or None and why (``note``)."""

    calibration: Calibration | None
    note: str


class Calibrations:
    """The gateway's view of every model's ``calibration.json`` in the model repository, re-read at most once
    per ``recheck_s`` per model (a recalibration is picked up without a restart; a search never waits for a
    file read more often than that)."""

    def __init__(self, repository: Path, recheck_s: float) -> None:
        self.repository = Path(repository)
        self.recheck_s = recheck_s
        self._cache: dict[str, tuple[float, Loaded]] = {}

    def path(self, model: str) -> Path:
        return self.repository / model / CALIBRATION_FILE

    def get(self, model: str) -> Loaded:
        now = time.monotonic()
        cached = self._cache.get(model)
        if cached is not None and now - cached[0] < self.recheck_s:
            return cached[1]
        try:
            loaded = Loaded(load(self.path(model), model), "")
        except FileNotFoundError:
            loaded = Loaded(None, f"no verdicts: no {CALIBRATION_FILE} beside the model (run `vsearch calibrate`, "
                                  "then export)")
        except CalibrationInvalid as exc:
            loaded = Loaded(None, f"no verdicts: {CALIBRATION_FILE} {exc}")
        self._cache[model] = (now, loaded)
        return loaded
