"""Training control: early stopping, load_best, eval and checkpoint intervals, over-fitting and small-data
warnings, from the recipe to the compiled Olive config and the trainer."""

from __future__ import annotations

import io
import json
import textwrap
from dataclasses import replace

import pytest
from conftest import tiny_recipe, write_recipe

from olive_flows.compile.plan import MIN_TRAIN_ROWS, small_data_warning
from olive_flows.compile.workflow import TRAIN, compile_recipe, intervals, total_steps
from olive_flows.console import Console
from olive_flows.data.prepare import prepare_dataset
from olive_flows.evaluate.report import overfitting, write_report
from olive_flows.layout import TRAINING_LOG, Workspace
from olive_flows.models.resolve import model_facts, model_ref
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

# --- compile ---------------------------------------------------------------------------------------


def compile_tiny(tiny_model, tmp_path, rows: int = 40, **training):
    """The compiled train pass of the tiny recipe's first adapter, with ``training`` added to both adapters."""
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    for adapter in recipe["adapters"].values():
        adapter["training"] |= training
    recipe = load_recipe(write_recipe(tmp_path, recipe, rows=rows))
    workspace = Workspace.of(recipe)
    ref = model_ref(recipe)
    datasets = {d: prepare_dataset(recipe, d, workspace.data) for d in recipe.datasets}
    return compile_recipe(recipe, ref, model_facts(ref), datasets, workspace)[0].config["passes"][TRAIN]


BEST = ("load_best_model_at_end", "metric_for_best_model", "greater_is_better")


def test_defaults_are_unchanged_when_the_fields_are_absent(tiny_model, tmp_path):
    train = compile_tiny(tiny_model, tmp_path, max_steps=20)
    args = train["training_args"]
    assert args["eval_steps"] == 5 and args["save_steps"] == 5, "EVALS_ and CHECKPOINTS_PER_TRAINING: 4 each"
    assert not any(key in args for key in BEST)
    assert "early_stopping_patience" not in train and "early_stopping_threshold" not in train


def test_eval_and_checkpoint_intervals_are_settable(tiny_model, tmp_path):
    args = compile_tiny(tiny_model, tmp_path, max_steps=20, eval_every=3, checkpoint_every=7)["training_args"]
    assert args["eval_steps"] == 3 and args["save_steps"] == 7, "without load_best they need not line up"


def test_early_stopping_compiles_to_the_callback_settings_and_the_best_checkpoint(tiny_model, tmp_path):
    train = compile_tiny(
        tiny_model, tmp_path, max_steps=20, eval_every=3, checkpoint_every=7, early_stopping={"patience": 3}
    )
    assert train["early_stopping_patience"] == 3 and train["early_stopping_threshold"] == 0.0, "min_delta default"
    args = train["training_args"]
    assert args["load_best_model_at_end"] is True
    assert args["metric_for_best_model"] == "eval_loss" and args["greater_is_better"] is False
    assert args["eval_steps"] == 3 and args["save_steps"] == 9, "rounded up to a multiple of eval_steps"


def test_load_best_alone_ends_on_the_best_checkpoint_without_stopping_early(tiny_model, tmp_path):
    train = compile_tiny(tiny_model, tmp_path, max_steps=20, load_best=True)
    assert train["training_args"]["load_best_model_at_end"] is True
    assert "early_stopping_patience" not in train


def test_intervals_keep_checkpoints_on_evaluations_only_for_the_best_checkpoint(tiny_model, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe(tiny_model("llama"), tmp_path / "out")))
    training = recipe.spec.adapters["dates"].training
    assert intervals(training, 100) == (25, 25)
    assert intervals(replace(training, eval_every=10, checkpoint_every=15), 100) == (10, 15)
    assert intervals(replace(training, eval_every=10, checkpoint_every=15, load_best=True), 100) == (10, 20)
    assert total_steps(training, 100) == 3


def test_a_dataset_without_held_out_rows_is_refused_at_compile(tiny_model, tmp_path):
    """Held-out rows that are only found missing once the data is read (an eval_path whose rows all go)
    stop the compile with the field, not the trainer mid-run."""
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    recipe["adapters"]["dates"]["training"] |= {"load_best": True}
    loaded = load_recipe(write_recipe(tmp_path, recipe))
    workspace = Workspace.of(loaded)
    ref = model_ref(loaded)
    datasets = {d: prepare_dataset(loaded, d, workspace.data) for d in loaded.datasets}
    datasets["dates"] = replace(datasets["dates"], rows={**datasets["dates"].rows, "eval": 0})
    with pytest.raises(UserError, match="load_best compares held-out losses, and dataset dates has no held-out"):
        compile_recipe(loaded, ref, model_facts(ref), datasets, workspace)


# --- validation ------------------------------------------------------------------------------------

RECIPE = """\
schema_version: 1
name: demo
model:
  id: builtin:smollm2-135m-instruct
datasets:
  people:
    path: people.jsonl
    eval_split: {eval_split}
adapters:
  first:
    dataset: people
    training:
      max_steps: {max_steps}
      early_stopping:
        patience: 2
targets:
  cpu:
    device: cpu
    precision: fp32
"""
ROW = '{"messages": [{"role": "user", "content": "hi %d"}, {"role": "assistant", "content": "hello"}]}\n'


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """Factory: load RECIPE (formatted with its fields) in the test's folder, beside 40 rows."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "people.jsonl").write_text("".join(ROW % i for i in range(40)), encoding="utf-8")

    def load(text: str = RECIPE, **fields):
        path = tmp_path / "recipe.yaml"
        path.write_text(
            textwrap.dedent(text.format(**{"eval_split": 0.1, "max_steps": 20, **fields})), encoding="utf-8"
        )
        return load_recipe(path)

    return load


def errors_of(load, *args, **fields) -> list[str]:
    with pytest.raises(UserError) as info:
        load(*args, **fields)
    return [p.format() for p in info.value.problems]


def test_early_stopping_within_reach_loads_without_a_word(demo):
    recipe = demo()
    assert recipe.warnings == []
    stopping = recipe.spec.adapters["first"].training.early_stopping
    assert (stopping.patience, stopping.min_delta) == (2, 0.0)


def test_early_stopping_without_held_out_rows_is_an_error_on_its_line(demo):
    found = errors_of(demo, eval_split=0)
    assert found[0] == "recipe.yaml:8:17: datasets.people.eval_split: must be > 0; found integer 0"
    assert found[1] == (
        "recipe.yaml:15:9: adapters.first.training.early_stopping: early_stopping compares held-out losses "
        "(eval_loss), and datasets.people.eval_split is 0: no rows are held out; give datasets.people held-out "
        "rows: eval_split (for example 0.1) or eval_path"
    )


def test_load_best_with_an_empty_eval_file_is_an_error_on_its_line(demo, tmp_path):
    (tmp_path / "held.jsonl").write_text("", encoding="utf-8")
    text = RECIPE.replace("eval_split: {eval_split}", "eval_path: held.jsonl").replace(
        "      early_stopping:\n        patience: 2\n", "      load_best: true\n"
    )
    found = errors_of(demo, text)
    assert found == [
        "recipe.yaml:8:16: datasets.people.eval_path: held.jsonl: the dataset has no usable rows",
        "recipe.yaml:14:18: adapters.first.training.load_best: load_best compares held-out losses (eval_loss), "
        "and datasets.people.eval_path (held.jsonl) has no rows; give datasets.people held-out rows: eval_split "
        "(for example 0.1) or eval_path",
    ]


def test_early_stopping_that_cannot_evaluate_often_enough_warns(demo):
    warned = [w.format() for w in demo(max_steps=2).warnings]
    assert warned == [
        "recipe.yaml:15:9: warning: adapters.first.training.early_stopping: early stopping can never stop this "
        "training: it evaluates the held-out loss 2 time(s) (every 1 of 2 steps), and stopping takes patience + 1 "
        "= 3 evaluations (a first one to beat, then 2 without improvement); set a smaller eval_every, or train "
        "for more steps"
    ]
    assert demo(max_steps=3).warnings == [], "3 steps, 3 evaluations"


def test_early_stopping_with_epochs_counts_the_rows(demo):
    text = RECIPE.replace("max_steps: {max_steps}", "epochs: 1\n      batch_size: 16\n      eval_every: 2")
    warned = [w.format() for w in demo(text).warnings]
    assert (
        len(warned) == 1
        and "evaluates the held-out loss 1 time(s) (every 2 of about 3 steps (1 epochs))" in (warned[0])
    ), "36 train rows of 40, 16 a batch: 3 steps"


def test_a_checkpoint_interval_off_the_evaluations_warns(demo):
    text = RECIPE.replace(
        "      early_stopping:", "      eval_every: 4\n      checkpoint_every: 5\n      early_stopping:"
    )
    warned = [w.format() for w in demo(text).warnings]
    assert warned == [
        "recipe.yaml:15:25: warning: adapters.first.training.checkpoint_every: checkpoints are saved every 8 steps, "
        "not 5: with early_stopping each checkpoint must fall on an evaluation (eval_every 4)"
    ]


def test_the_new_fields_have_schema_minimums(demo):
    text = RECIPE.replace("patience: 2", "patience: 0")
    assert "adapters.first.training.early_stopping.patience" in errors_of(demo, text)[0]
    text = RECIPE.replace("      early_stopping:", "      eval_every: 0\n      early_stopping:")
    assert "adapters.first.training.eval_every" in errors_of(demo, text)[0]


def test_too_few_training_rows_warn_with_the_threshold(tiny_model, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe(tiny_model("llama"), tmp_path / "out"), rows=12))
    data = prepare_dataset(recipe, "dates", Workspace.of(recipe).data)
    assert data.train_rows < MIN_TRAIN_ROWS
    warning = small_data_warning(data)
    assert warning.startswith(f"warning: data dates: only {data.train_rows} training rows") and "16" in warning
    assert small_data_warning(replace(data, rows={**data.rows, "train": MIN_TRAIN_ROWS})) is None


# --- over-fitting ----------------------------------------------------------------------------------


def log(train: list[float], held_out: dict[int, float]) -> list[dict]:
    """A training log as training_log.json holds it: one entry per step, evaluations after theirs."""
    entries = []
    for step, loss in enumerate(train, start=1):
        entries.append({"step": step, "loss": loss, "learning_rate": 0.001})
        if step in held_out:
            entries.append({"step": step, "eval_loss": held_out[step]})
    return entries


def test_rising_held_out_loss_while_training_loss_falls_is_over_fitting():
    history = log([2.0, 1.8, 1.5, 1.2, 1.0, 0.8, 0.5, 0.3], {2: 1.9, 4: 1.7, 6: 1.75, 8: 1.9})
    warning = overfitting(history)
    assert warning.startswith("held-out loss rose from 1.7000 to 1.9000 (+12%) between steps 4 and 8")
    assert "training loss fell from 1.3500 to 0.4000" in warning, "means since the evaluation before"


def test_no_over_fitting_warning_for_falling_flat_or_noisy_held_out_loss():
    falling = log([2.0, 1.8, 1.5, 1.2, 1.0, 0.8], {2: 1.9, 4: 1.7, 6: 1.6})
    noise = log([2.0, 1.8, 1.5, 1.2, 1.0, 0.8], {2: 1.9, 4: 1.7, 6: 1.72})
    both_rise = log([1.0, 1.2, 1.4, 1.6, 1.8, 2.0], {2: 1.0, 4: 1.5, 6: 2.0})
    early_rise = log([2.0, 1.8, 1.5, 1.2, 1.0, 0.8, 0.5, 0.3], {2: 1.0, 4: 1.5, 6: 1.4, 8: 1.3})
    assert overfitting(falling) is None
    assert overfitting(noise) is None, "within 2%"
    assert overfitting(both_rise) is None, "training diverges: not over-fitting"
    assert overfitting(early_rise) is None, "only the last three evaluations count"
    assert overfitting(log([2.0, 1.0], {2: 1.5})) is None and overfitting([]) is None


def test_the_report_shows_the_over_fitting_warning(tmp_path, monkeypatch):
    import olive_flows.evaluate.report as report

    monkeypatch.setattr(report, "_sections", lambda evaluation, manifest: [])
    monkeypatch.setattr(report, "_plot", lambda history, title: (b"png", b"png"))
    history = log([2.0, 1.8, 1.5, 1.2, 1.0, 0.8], {2: 1.5, 4: 1.6, 6: 1.8})
    manifest = {
        "recipe": {"name": "tiny"},
        "target": {"name": "cpu", "precision": "int4", "provider": "CPU", "runtime_package": "ort"},
        "base_model": {"id": "m"},
        "smoke_check": "ok",
    }
    write_report(tmp_path, {}, manifest, {"dates": history, "contacts": log([1.0], {})}, {})
    md, page = (
        (tmp_path / "report.md").read_text(encoding="utf-8"),
        (tmp_path / "report.html").read_text(encoding="utf-8"),
    )
    assert "**Warning: dates**: held-out loss rose from 1.5000 to 1.8000" in md
    assert "contacts**" not in md
    assert '<p class="warning"><strong>Warning: dates</strong>: held-out loss rose' in page


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_early_stopping_stops_the_tiny_llama_before_max_steps(tiny_model, tmp_path):
    """patience 1 and a min_delta no change of held-out loss can beat: training stops at the second
    evaluation (step 4 of 40); training_log.json beside the trained adapter shows where it stopped."""
    from olive_flows.pipeline import run_recipe

    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out", cpu={"device": "cpu", "precision": "fp32"})
    recipe["adapters"] = {"dates": recipe["adapters"]["dates"]}
    recipe["adapters"]["dates"]["training"] |= {
        "max_steps": 40,
        "learning_rate": 0.5,
        "eval_every": 2,
        "early_stopping": {"patience": 1, "min_delta": 10.0},
    }
    recipe["evaluation"]["metrics"] = {"dates": ["exact_match"]}
    console = io.StringIO()
    run_recipe(load_recipe(write_recipe(tmp_path, recipe)), offline=True, console=Console(console))

    history = json.loads((tmp_path / "out" / "tiny" / "_peft" / "dates" / TRAINING_LOG).read_text(encoding="utf-8"))
    evaluations = [entry["step"] for entry in history if "eval_loss" in entry]
    assert evaluations == [2, 4], "stopped at the second evaluation"
    assert max(entry["step"] for entry in history) == 4 < 40
