"""Olive failures and prunes become PassFailed errors that name the pass and show its log."""

from __future__ import annotations

import pytest
from conftest import tiny_recipe, write_recipe

from olive_flows.compile.workflow import compile_recipe
from olive_flows.data.prepare import prepare_dataset
from olive_flows.models.resolve import model_facts, model_ref
from olive_flows.recipe.load import load_recipe
from olive_flows.run.olive import PassFailed, run_workflow
from olive_flows.workspace import Workspace


@pytest.fixture
def tiny_job(tiny_model, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe(tiny_model("llama"), tmp_path / "out"), rows=12))
    workspace = Workspace.of(recipe)
    ref = model_ref(recipe)
    datasets = {d: prepare_dataset(recipe, d, workspace.data) for d in recipe.datasets}
    return compile_recipe(recipe, ref, model_facts(ref), datasets, workspace)[0]


def test_pruned_pass_is_named_with_olives_reason(tiny_job, tmp_path):
    config = tiny_job.config
    config["passes"]["build"] = {"type": "ModelBuilder", "precision": "fp16"}  # Olive prunes fp16 on a CPU target
    with pytest.raises(PassFailed) as info:
        run_workflow(tiny_job.name, config, tmp_path / "job.log")
    assert info.value.pass_name == "build"
    assert "FP16 is not supported on CPU" in str(info.value)
    assert "--- last 40 lines of" in str(info.value)


def test_failing_pass_is_named_with_the_exception(tiny_job, tmp_path):
    config = tiny_job.config
    config["passes"]["train"]["target_modules"] = ["no_such_proj"]
    with pytest.raises(PassFailed) as info:
        run_workflow(tiny_job.name, config, tmp_path / "job.log")
    assert info.value.pass_name == "train"
    assert "no_such_proj" in str(info.value)
    assert "Traceback" in (tmp_path / "job.log").read_text(), "the full traceback is kept in the log"
