"""The default recipe end to end through the real command, with few steps (slow: about a minute)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    steps = [f"adapters.{a}.training.max_steps=2" for a in ("contacts", "dates")]
    args = ["run", "quickstart", f"output.dir={tmp_path}", "evaluation.max_rows=3", *steps]
    result = subprocess.run([sys.executable, "-m", "olive_flows", *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr

    package = tmp_path / "quickstart" / "cpu"
    assert "smoke check passed" in result.stdout
    assert "evaluating on held-out rows" in result.stdout
    scores = json.loads((package / "eval.json").read_text())
    assert set(scores["adapters"]) == {"contacts", "dates"}
    assert set(scores["base"]["metrics"]) == {
        "contacts/json_fields",
        "contacts/json_valid",
        "contacts/exact_match",
        "dates/exact_match",
    }
    assert scores["parity"]["checked"] and set(scores["parity"]["relative_difference"]) == {"base", "contacts", "dates"}
    assert scores["parity"]["ok"], f"int4 (q4_1) perplexity left the 5% bound: {scores['parity']}"
    assert (package / "report.html").is_file() and (package / "report.md").is_file()
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["base_model"]["id"] == "builtin:smollm2-135m-instruct"
    assert manifest["files"]["model.onnx"]["size"] > 100_000_000
