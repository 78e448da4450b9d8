"""The quickstart datasets in the repository are exactly what the generator script produces."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_committed_data_matches_generator():
    script = REPO / "scripts" / "make_quickstart_data.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
