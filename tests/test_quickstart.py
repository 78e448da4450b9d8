"""The default recipe end to end through the real command, as `make finetune` runs it: full training and
evaluation (slow: about 4 to 5 minutes on 2 cores). Each adapter must beat the base on its task."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    args = ["run", "quickstart", f"output.dir={tmp_path}"]
    result = subprocess.run([sys.executable, "-m", "olive_flows", *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr

    package = tmp_path / "quickstart" / "cpu"
    assert "smoke check passed" in result.stdout
    assert "evaluating on held-out rows" in result.stdout
    scores = json.loads((package / "eval.json").read_text(encoding="utf-8"))
    assert set(scores["adapters"]) == {"contacts", "dates"}
    assert set(scores["base"]["metrics"]) == {
        "contacts/json_fields",
        "contacts/json_valid",
        "contacts/exact_match",
        "dates/exact_match",
    }
    assert scores["parity"]["checked"] and set(scores["parity"]["by"]) == {"base", "contacts", "dates"}
    assert scores["parity"]["ok"] and scores["parity"]["enforced"], scores["parity"]
    for adapter, entry in scores["adapters"].items():
        for metric, value in entry["metrics"].items():
            base = scores["base"]["metrics"][f"{adapter}/{metric}"]
            assert value >= base + 0.5, f"{adapter} {metric}: {value} against the base's {base}"
        ppl = entry["perplexity"]["onnx"]
        assert ppl < 0.5 * scores["base"]["perplexity_by_adapter"][adapter]["onnx"], (adapter, ppl)
    assert (package / "report.html").is_file() and (package / "report.md").is_file()

    # Answered one prompt at a time, as chat answers, the scores are those of the batched answers.
    alone = package.parent / "alone"
    shutil.copytree(package, alone)
    args = ["eval", str(alone), "evaluation.batch_size=1", "evaluation.pytorch=false"]
    evaluated = subprocess.run([sys.executable, "-m", "olive_flows", *args], capture_output=True, text=True, cwd=REPO)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    one_by_one = json.loads((alone / "eval.json").read_text(encoding="utf-8"))
    assert one_by_one["base"]["metrics"] == scores["base"]["metrics"]
    for adapter, entry in scores["adapters"].items():
        assert one_by_one["adapters"][adapter]["metrics"] == entry["metrics"], adapter

    # A broken adapter file fails the default parity bounds: the two adapters' files exchanged.
    broken = package.parent / "swapped"
    shutil.copytree(package, broken)
    sys.path.insert(0, str(REPO / "bench"))
    from parity_bounds import swapped  # the breakage bench/parity_bounds.py measures

    swapped(broken)
    evaluated = subprocess.run(
        [sys.executable, "-m", "olive_flows", "eval", str(broken)], capture_output=True, text=True, cwd=REPO
    )
    assert evaluated.returncode == 4 and "PARITY BROKEN" in evaluated.stderr, evaluated.stdout + evaluated.stderr
    failed = json.loads((broken / "eval.json").read_text(encoding="utf-8"))["parity"]["failures"]
    assert {f.split(":")[0] for f in failed} == {"contacts", "dates"}, failed
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["base_model"]["id"] == "builtin:smollm2-135m-instruct"
    assert manifest["files"]["model.onnx"]["size"] > 100_000_000
