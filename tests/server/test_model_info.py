"""The gateway's reading of model_info.json: a missing or broken file describes nothing, never fails ListModels."""

from __future__ import annotations

import json

from server.model_info import ModelInfoFile, read_model_info


def test_model_info_is_read_and_a_bad_file_describes_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model_info.json").write_text(json.dumps({"trained_on": "x", "domain": "y", "other": 1}))
    assert read_model_info(tmp_path, "a") == ModelInfoFile("", "x", "y")
    assert read_model_info(tmp_path, "missing") == ModelInfoFile()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model_info.json").write_text("[not json")
    assert read_model_info(tmp_path, "b") == ModelInfoFile()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model_info.json").write_text("[1, 2]")
    assert read_model_info(tmp_path, "c") == ModelInfoFile()
