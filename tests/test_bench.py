"""The benchmark's own code paths still run (the figures come from `make bench`, not from here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_train_padding_runs_as_the_readme_shows(tmp_path):
    """`bench/train_padding.py` on one step and one repeat: plan, Olive's LoRA pass and the recorder."""
    out = tmp_path / "padding.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_padding.py"), "--steps", "1", "--repeats", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["steps"] == 1 and figures["ratio_olive_flows_vs_olive_default"] > 0
