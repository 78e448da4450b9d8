"""Sweeps: the sweep block is checked field by field like an override, and a sweep on the tiny Llama
stores its study, resumes, reports, and writes a best recipe that runs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from conftest import minimal_recipe, tiny_recipe, write_recipe

from olive_flows.cli.main import main
from olive_flows.console import Console
from olive_flows.problems import UserError
from olive_flows.sweep.report import write_best_recipe
from olive_flows.sweep.space import override, read_sweep
from olive_flows.validate.load import load_recipe

pytestmark = pytest.mark.usefixtures("in_tmp")


def sweep_recipe(tmp_path, sweep: dict, **fields):
    recipe = minimal_recipe(
        datasets={"d": {"path": "data/dates.jsonl", "eval_split": 0.1}},
        adapters={"a": {"dataset": "d"}},
        evaluation={"metrics": {"d": ["exact_match"]}},
        sweep=sweep,
        **fields,
    )
    return write_recipe(tmp_path, recipe).relative_to(tmp_path)


def problems(path) -> str:
    with pytest.raises(UserError) as exc:
        read_sweep(load_recipe(path), path)
    return exc.value.text


def sweep_line(path, key: str) -> int:
    """The line number (1-based) of ``key`` in the recipe file."""
    return next(
        i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip().startswith(key)
    )


def test_a_valid_sweep_reads_with_defaults(tmp_path):
    path = sweep_recipe(
        tmp_path,
        {"parameters": {"adapters.a.training.learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}}},
    )
    sweep = read_sweep(load_recipe(path), path)
    assert (sweep.trials, sweep.metric, sweep.direction, sweep.sampler) == (8, "eval_loss", "minimize", "tpe")
    assert sweep.parameters["adapters.a.training.learning_rate"].log
    assert override("adapters.a.training.learning_rate", 3e-5) == "adapters.a.training.learning_rate=3.0e-05"


def test_an_unknown_field_is_reported_at_its_line(tmp_path):
    path = sweep_recipe(tmp_path, {"parameters": {"adapters.a.training.learning_rat": {"low": 0.001, "high": 0.01}}})
    text = problems(path)
    assert f"recipe.yaml:{sweep_line(path, 'adapters.a.training.learning_rat')}" in text
    assert "learning_rate" in text  # the override's own hint


def test_a_value_outside_the_schema_is_reported(tmp_path):
    path = sweep_recipe(tmp_path, {"parameters": {"adapters.a.r": {"choices": [8, 0]}}})
    text = problems(path)
    assert "adapters.a.r=0" in text and f"recipe.yaml:{sweep_line(path, 'adapters.a.r')}" in text
    assert "adapters.a.r=8" not in text


def test_a_grid_needs_choices_and_a_small_grid(tmp_path):
    path = sweep_recipe(
        tmp_path,
        {
            "sampler": "grid",
            "parameters": {
                "adapters.a.r": {"choices": [2, 4, 8, 16, 32, 64, 128, 256]},
                "adapters.a.alpha": {"choices": [2, 4, 8, 16, 32, 64, 128, 256, 512]},
                "adapters.a.training.learning_rate": {"low": 1e-4, "high": 1e-3},
            },
        },
    )
    with pytest.raises(UserError) as exc:
        load_recipe(path)
    assert "a grid sweep needs choices" in exc.value.text and "72 combinations, more than 64" in exc.value.text


def test_the_objective_must_be_measured(tmp_path):
    params = {"adapters.a.r": {"choices": [4, 8]}}
    path = sweep_recipe(tmp_path, {"objective": {"metric": "a/json_fields"}, "parameters": params})
    with pytest.raises(UserError) as exc:
        load_recipe(path)
    assert "a is not scored on 'json_fields'" in exc.value.text
    assert f"recipe.yaml:{sweep_line(path, 'metric: a/json_fields')}" in exc.value.text
    for metric in ("a/exact_match", "a/perplexity", "eval_loss"):
        load_recipe(path, [f"sweep.objective.metric={metric}"])


def test_the_best_recipe_extends_the_swept_one_without_its_sweep(tmp_path):
    path = sweep_recipe(tmp_path, {"parameters": {"adapters.a.r": {"choices": [4, 8]}}})
    best = write_best_recipe(
        path, "minimal", {"adapters.a.r": 8, "adapters.a.training.learning_rate": 3e-5}, ["adapters.a.alpha=4"]
    )
    assert best.name == "minimal.best.yaml" and best.parent == tmp_path
    document = yaml.safe_load(best.read_text(encoding="utf-8"))
    assert document["extends"] == "recipe.yaml" and document["sweep"] is None
    assert document["adapters"]["a"] == {"alpha": 4, "r": 8, "training": {"learning_rate": 3e-5}}
    recipe = load_recipe(best)
    assert "sweep" not in recipe.data and recipe.data["adapters"]["a"]["r"] == 8


def test_jobs_below_one_are_refused(tmp_path, capsys):
    path = sweep_recipe(tmp_path, {"parameters": {"adapters.a.r": {"choices": [4, 8]}}})
    assert main(["sweep", str(path), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def random_learning_rate_sweep(tiny_model, folder: Path) -> Path:
    """The tiny recipe with a two-trial random sweep of the dates adapter's learning rate."""
    recipe = tiny_recipe(tiny_model("llama"), folder / "out")
    recipe["sweep"] = {
        "trials": 2,
        "sampler": "random",
        "parameters": {"adapters.dates.training.learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}},
    }
    return write_recipe(folder, recipe)


@pytest.mark.slow
def test_a_random_sweep_runs_resumes_and_writes_a_best_recipe(tiny_model, tmp_path, capsys):
    path = random_learning_rate_sweep(tiny_model, tmp_path)
    assert main(["sweep", str(path), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "trial 0:" in out and "trial 1:" in out and "complete" in out
    sweep = tmp_path / "out" / "tiny" / "_work" / "sweep"
    assert (sweep / "study.db").is_file() and "data:image/png;base64," in (sweep / "report.html").read_text(
        encoding="utf-8"
    )
    best = tmp_path / "tiny.best.yaml"
    assert "learning_rate" in best.read_text(encoding="utf-8") and "sweep" not in load_recipe(best).data

    assert main(["sweep", str(path), "--trials", "2", "--offline"]) == 0  # resumed: nothing left to run
    out = capsys.readouterr().out
    assert "trial 2:" not in out and "none run" in out

    from olive_flows.pipeline import run_recipe

    result = run_recipe(load_recipe(best), offline=True, console=Console(io.StringIO()))
    assert result.packages["cpu"].is_dir()


@pytest.mark.slow
def test_two_sweep_processes_share_one_study_and_the_best_is_packaged(tiny_model, tmp_path, capsys):
    """--jobs 2: two processes, each in its own folder, fill one study; --package-best builds the winner."""
    path = random_learning_rate_sweep(tiny_model, tmp_path)
    assert main(["sweep", str(path), "--jobs", "2", "--package-best", "--offline"]) == 0
    out = capsys.readouterr().out
    sweep = tmp_path / "out" / "tiny" / "_work" / "sweep"
    logs = [(sweep / f"worker-{n}.log").read_text(encoding="utf-8") for n in (0, 1)]
    assert all("trial " in log for log in logs), "both processes ran trials"
    assert (sweep / "worker-0" / "tiny").is_dir() and (sweep / "worker-1" / "tiny").is_dir()
    assert out.count("complete") >= 2 and (tmp_path / "tiny.best.yaml").is_file()
    assert (tmp_path / "out" / "tiny" / "cpu" / "manifest.json").is_file(), "--package-best built the winner"
