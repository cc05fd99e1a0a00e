"""What the gateway says about a served model beyond its shape: its description, what it was trained on and its
domain, read from ``model_info.json`` beside the model in the Triton repository (export writes it). A model exported
before the file existed, or with an unreadable one, is described by nothing rather than failing ListModels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from extractors.served_files import MODEL_INFO_FILE


@dataclass(frozen=True)
class ModelInfoFile:
    description: str = ""
    trained_on: str = ""
    domain: str = ""


def read_model_info(repository: Path, model: str) -> ModelInfoFile:
    try:
        raw = json.loads((Path(repository) / model / MODEL_INFO_FILE).read_text())
        return ModelInfoFile(str(raw.get("description", "")), str(raw.get("trained_on", "")),
                             str(raw.get("domain", "")))
    except (OSError, ValueError, AttributeError):
        return ModelInfoFile()
