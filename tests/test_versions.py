"""A run keeps the package it replaces (output.keep_versions); ``olive-flows versions`` lists them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from conftest import tiny_recipe, write_recipe

from olive_flows.console import Console
from olive_flows.package.versions import list_versions, promote
from olive_flows.pipeline import run_recipe
from olive_flows.validate.load import load_recipe


def fake_package(folder, inputs: str, built: float) -> None:
    folder.mkdir(parents=True)
    manifest = {"recipe": {"sha256": "r" * 64}, "inputs_sha256": inputs * 8, "files": {"model.onnx": {"size": 10}}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "eval.json").write_text(
        json.dumps({"adapters": {"dates": {"metrics": {"exact_match": 0.5}}}}), encoding="utf-8"
    )
    os.utime(folder / "manifest.json", (built, built))


def test_kept_versions_are_moved_whole_and_the_oldest_go_first(tmp_path):
    current, versions, staging = tmp_path / "cpu", tmp_path / "_versions" / "cpu", tmp_path / ".cpu.staging-1"
    for number in range(5):
        fake_package(staging, f"{number}", 1_800_000_000 + number * 60)
        promote(staging, current, versions, keep=2)
        manifest = json.loads((current / "manifest.json").read_text(encoding="utf-8"))
        assert not staging.exists() and manifest["inputs_sha256"] == f"{number}" * 8
    listed = list_versions(current, versions)
    assert listed[0].label == "current" and [v.folder.name[-8:] for v in listed[1:]] == ["33333333", "22222222"]
    assert all((v.folder / "eval.json").is_file() for v in listed), "kept whole"
    fake_package(staging, "9", 1_900_000_000)
    promote(staging, current, versions, keep=0)
    assert len(list_versions(current, versions)) == 3, "keep_versions: 0 keeps none of what it replaces"
    assert list_versions(current, versions)[0].headline() == {"dates/exact_match": 0.5}


@pytest.mark.slow
def test_a_rerun_keeps_the_package_it_replaces(tiny_model, tmp_path):
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    recipe["output"]["keep_versions"] = 1
    path = write_recipe(tmp_path, recipe)
    first = run_recipe(load_recipe(path), console=Console(io.StringIO())).packages["cpu"]
    built_first = json.loads((first / "manifest.json").read_text(encoding="utf-8"))["inputs_sha256"]
    for steps in (4, 5):
        run_recipe(load_recipe(path, [f"adapters.dates.training.max_steps={steps}"]), console=Console(io.StringIO()))
    kept = list((tmp_path / "out" / "tiny" / "_versions" / "cpu").iterdir())
    assert len(kept) == 1, "keep_versions: 1"
    assert json.loads((kept[0] / "manifest.json").read_text(encoding="utf-8"))["inputs_sha256"] != built_first, (
        "the oldest went"
    )
    assert (kept[0] / "eval.json").is_file() and (kept[0] / "adapters" / "dates.onnx_adapter").is_file()

    shown = subprocess.run(
        [sys.executable, "-m", "olive_flows", "versions", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "cpu: 2 packages"
    assert lines[1].lstrip().startswith("current") and lines[3].lstrip().startswith(kept[0].name)
    assert "dates/exact_match" in lines[2] and "MB" in lines[1]


def test_promotion_verdicts():
    from olive_flows.package.promotion import losses

    current = {"adapters": {"dates": {"metrics": {"exact_match": 0.8}, "perplexity": {"onnx": 2.0}}}}
    better = {"promote": {"when": "better", "metrics": ["dates/exact_match", "dates/perplexity"], "tolerance": 0.01}}
    same = {"adapters": {"dates": {"metrics": {"exact_match": 0.795}, "perplexity": {"onnx": 2.005}}}}
    assert losses(better["promote"], same, current) == [], "within the tolerance"
    worse = {"adapters": {"dates": {"metrics": {"exact_match": 0.7}, "perplexity": {"onnx": 2.5}}}}
    found = losses(better["promote"], worse, current)
    assert len(found) == 2 and found[0].startswith("dates/exact_match 0.7 against the current package's 0.8")
    assert losses(better["promote"], worse, None) == [], "the first package is always promoted"
    broken = {"adapters": {"dates": {"metrics": {"exact_match": 0.8}, "perplexity": {"onnx": float("nan")}}}}
    assert len(losses(better["promote"], broken, current)) == 1, "a perplexity that is not a number loses"
    assert losses({**better["promote"], "when": "always"}, worse, current) == []


def test_the_scoring_basis_follows_the_rows_and_scoring_settings_only():
    """promote.when: better scores the current package again where its eval.json's basis differs: the
    held-out rows, their encoding and the settings that judge the answers change it; settings that
    do not touch the scores (speed, samples, parity bounds, the PyTorch side) leave it."""
    from olive_flows.evaluate.evaluation import EvalSubject, scoring_basis

    rows = [{"messages": [{"role": "user", "content": "5 May"}, {"role": "assistant", "content": "05-05"}]}]
    subject = EvalSubject(rows={"dates": rows}, dataset_of={"dates": "dates"}, precision="int4")

    def basis(*overrides: str, subject: EvalSubject = subject) -> str:
        return scoring_basis(load_recipe("quickstart", list(overrides)), subject, ["dates"])

    first = basis()
    same = ["evaluation.smoke_prompt=Hi", "evaluation.pytorch=false", "evaluation.decode_tokens=8"]
    assert basis(*same, "evaluation.parity.max_kl=1") == first
    changed = [
        "evaluation.max_new_tokens=8",
        "evaluation.batch_size=1",
        "evaluation.normalize=[]",
        "evaluation.metrics.dates=[contains]",
        "adapters.dates.training.max_seq_len=64",
    ]
    assert len({first, *(basis(override) for override in changed)}) == len(changed) + 1
    other_rows = EvalSubject(rows={"dates": rows * 2}, dataset_of={"dates": "dates"}, precision="int4")
    assert basis(subject=other_rows) != first


@pytest.mark.slow
def test_a_worse_package_is_kept_as_a_candidate_and_not_promoted(tiny_model, tmp_path):
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    recipe["promote"] = {"when": "better", "metrics": ["dates/perplexity"], "tolerance": 0}
    path = write_recipe(tmp_path, recipe)
    command = [sys.executable, "-m", "olive_flows", "run", str(path)]
    assert subprocess.run(command, capture_output=True, text=True, cwd=tmp_path).returncode == 0
    current = tmp_path / "out" / "tiny" / "cpu"
    kept_inputs = json.loads((current / "manifest.json").read_text(encoding="utf-8"))["inputs_sha256"]

    # scored on one row by `olive-flows eval`, the same package is rebuilt by the next run, and promoted
    # although its full evaluation scores worse than that row (the same model: nothing to compare)
    quick = [sys.executable, "-m", "olive_flows", "eval", str(current), "evaluation.max_rows=1"]
    assert subprocess.run(quick, capture_output=True, text=True, cwd=tmp_path).returncode == 0
    one_row = json.loads((current / "eval.json").read_text(encoding="utf-8"))["adapters"]["dates"]["perplexity"]
    same = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert same.returncode == 0 and "not promoted" not in same.stderr, same.stderr[-2000:]
    full = json.loads((current / "eval.json").read_text(encoding="utf-8"))["adapters"]["dates"]["perplexity"]
    assert full["onnx"] > one_row["onnx"], "the one-row score would keep the package out"

    # a broken adapter: scaled by 2.5e37 its update overflows float32, training learns nothing from it, and
    # its held-out perplexity stays the untrained one (44,209 against 35,428 trained, on this tiny model)
    worse = ["adapters.dates.alpha=1.0e+38"]
    rerun = subprocess.run([*command, *worse], capture_output=True, text=True, cwd=tmp_path)
    assert rerun.returncode == 8, rerun.stderr[-2000:]
    assert "not promoted (promote.when: better): dates/perplexity" in rerun.stderr
    assert "scoring it again" not in rerun.stdout, "both scored on the same rows"
    # scored on one row, the broken adapter is judged against the current package scored again on that
    # row (as `olive-flows eval` scored it above), not against its full evaluation in eval.json
    one_row_rerun = subprocess.run(
        [*command, *worse, "evaluation.max_rows=1"], capture_output=True, text=True, cwd=tmp_path
    )
    assert one_row_rerun.returncode == 8, one_row_rerun.stderr[-2000:]
    assert "the current package was scored on other held-out rows or settings" in one_row_rerun.stdout
    assert f"against the current package's {one_row['onnx']} " in one_row_rerun.stderr, one_row_rerun.stderr[-2000:]
    assert json.loads((current / "eval.json").read_text(encoding="utf-8"))["adapters"]["dates"]["perplexity"] == full
    assert json.loads((current / "manifest.json").read_text(encoding="utf-8"))["inputs_sha256"] == kept_inputs, (
        "current stays"
    )
    candidates = sorted((tmp_path / "out" / "tiny" / "_versions" / "cpu").glob("*-candidate"))
    assert len(candidates) == 2 and (candidates[0] / "eval.json").is_file()
    shown = subprocess.run(
        [sys.executable, "-m", "olive_flows", "versions", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert candidates[0].name in shown.stdout and "current" in shown.stdout
    compared = subprocess.run(
        [sys.executable, "-m", "olive_flows", "compare", str(current), str(candidates[0]), "--html", "c.html"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert compared.returncode == 0, compared.stderr
    row = next(line for line in compared.stdout.splitlines() if line.startswith("dates/perplexity"))
    best, worst = (json.loads((p / "eval.json").read_text(encoding="utf-8")) for p in (current, candidates[0]))
    assert row.split()[1:] == [str(s["adapters"]["dates"]["perplexity"]["onnx"]) for s in (best, worst)]
    assert "sample answers (A | B):" in compared.stdout and "different held-out rows" not in compared.stdout
    assert "<h1>olive-flows compare</h1>" in (tmp_path / "c.html").read_text(encoding="utf-8")
    again = subprocess.run(
        [sys.executable, "-m", "olive_flows", "compare", str(candidates[0]), str(current), "--rescore"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert again.returncode == 0 and "scored again now, on the same held-out rows" in again.stdout, again.stderr
    row = next(line for line in again.stdout.splitlines() if line.startswith("dates/perplexity"))
    assert row.split()[2] == str(best["adapters"]["dates"]["perplexity"]["onnx"]), "the same rows, the same score"
    refused = subprocess.run(
        [sys.executable, "-m", "olive_flows", "compare", str(current), str(tmp_path)], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "not a package folder" in refused.stderr

    # a current package that no longer runs cannot be scored again: the new one replaces it
    (current / "model.onnx").write_bytes(b"damaged")
    replaced = subprocess.run(
        [*command, *worse, "evaluation.max_new_tokens=8"], capture_output=True, text=True, cwd=tmp_path
    )
    assert replaced.returncode == 0, replaced.stdout[-3000:]
    assert "the current package does not run here" in replaced.stdout
    assert json.loads((current / "manifest.json").read_text(encoding="utf-8"))["inputs_sha256"] != kept_inputs
