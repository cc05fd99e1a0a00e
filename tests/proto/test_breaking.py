"""The contract stays backwards compatible: `buf breaking` (FILE rules, proto/buf.yaml) finds nothing between
proto/ and the released v1 contract kept in tests/proto/baseline/, and it does notice a removed field."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.proto.test_contract import PROTO_DIR, PROTO_FILE, REPO, _buf

BASELINE = Path(__file__).resolve().parent / "baseline" / "search_v1.proto.txt"


def _module(root: Path, proto_text: str) -> Path:
    """A buf module at ``root`` holding ``proto_text`` as the contract (with proto/'s buf.yaml)."""
    (root / PROTO_FILE).parent.mkdir(parents=True)
    (root / PROTO_FILE).write_text(proto_text)
    shutil.copyfile(PROTO_DIR / "buf.yaml", root / "buf.yaml")
    return root


def _breaking(current: Path, against: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_buf()), "breaking", str(current), "--against", str(against)], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def test_the_contract_is_compatible_with_the_released_v1(tmp_path: Path) -> None:
    released = _module(tmp_path / "released", BASELINE.read_text())
    result = _breaking(PROTO_DIR, released)
    assert result.returncode == 0, f"proto/ breaks the released v1 contract:\n{result.stdout}{result.stderr}"


def test_buf_breaking_notices_a_removed_field(tmp_path: Path) -> None:
    released = _module(tmp_path / "released", BASELINE.read_text())
    current = (PROTO_DIR / PROTO_FILE).read_text()
    mutated, n = re.subn(r"\n\s*int32 top_k = 5;", "\n", current, count=1)
    assert n == 1, "the mutation found no SearchRequest.top_k to remove"
    result = _breaking(_module(tmp_path / "mutated", mutated), released)
    assert result.returncode != 0, "buf breaking accepted a removed field: is it comparing anything?"
    assert "top_k" in result.stdout + result.stderr or '"5"' in result.stdout, result.stdout + result.stderr
