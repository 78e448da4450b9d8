"""Adapters trained elsewhere (``from``): checked at validation, packaged beside the trained ones."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from conftest import tiny_recipe, write_recipe

from olive_flows.console import Console
from olive_flows.pipeline import run_recipe
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the tiny recipe's adapters train these (llama default)


def peft_adapter(model_folder, folder, modules=ATTENTION, r=8, seed=1):
    """An adapter as a plain peft script saves one, with random B (peft's default B=0 would do nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_folder)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(modules), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def recipe_with(tmp_path, model, adapter: dict, **evaluation) -> dict:
    recipe = tiny_recipe(model, tmp_path / "out")
    recipe["adapters"]["peft"] = adapter
    recipe["evaluation"].update(evaluation)
    return recipe


def problems(tmp_path, recipe: dict) -> list[str]:
    path = tmp_path / "recipe.yaml"
    write_recipe(tmp_path, recipe)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    return [p.format() for p in info.value.problems]


@pytest.fixture
def llama(tiny_model):
    return tiny_model("llama")


def test_a_peft_adapter_validates_with_its_own_rank_and_modules(tmp_path, llama):
    peft_adapter(llama, tmp_path / "mine")
    recipe = load_recipe(write_recipe(tmp_path, recipe_with(tmp_path, llama, {"from": "mine"})))
    assert recipe.spec.adapters["peft"].from_ == "mine" and recipe.spec.adapters["peft"].dataset is None


def test_from_excludes_what_its_config_says(tmp_path, llama, monkeypatch):
    monkeypatch.chdir(tmp_path)
    peft_adapter(llama, tmp_path / "mine")
    found = problems(tmp_path, recipe_with(tmp_path, llama, {"from": "mine", "dataset": "dates", "r": 4}))
    assert [p.split(": ", 1)[1].split(":")[0] for p in found] == ["adapters.peft.dataset", "adapters.peft.r"]
    assert "does not apply to an adapter trained elsewhere (from)" in found[0]
    assert problems(tmp_path, recipe_with(tmp_path, llama, {"r": 4}))[0].endswith(
        "adapters.peft: set dataset (the rows to train it on), or from (an adapter trained elsewhere)"
    )


def test_a_folder_that_is_not_a_lora_adapter_is_refused_at_from(tmp_path, llama, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        "adapter folder missing does not exist"
        in problems(tmp_path, recipe_with(tmp_path, llama, {"from": "./missing"}))[0]
    )
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}), encoding="utf-8")
    found = problems(tmp_path, recipe_with(tmp_path, llama, {"from": "ia3"}))
    assert found == [f"recipe.yaml:{found[0].split(':')[1]}:{found[0].split(':')[2]}: adapters.peft.from: "
                     "ia3/adapter_config.json is a IA3 adapter; only LoRA adapters can be packaged"]  # fmt: skip
    peft_adapter(llama, tmp_path / "dora")
    config = json.loads((tmp_path / "dora" / "adapter_config.json").read_text(encoding="utf-8"))
    (tmp_path / "dora" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}), encoding="utf-8")
    assert (
        "the ONNX export cannot carry DoRA's magnitude vectors"
        in problems(tmp_path, recipe_with(tmp_path, llama, {"from": "dora"}))[0]
    )


def test_an_adapter_of_another_model_is_refused_with_the_shapes(tmp_path, llama, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wider = tmp_path / "wider"
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(llama)
    config.hidden_size = 128
    AutoModelForCausalLM.from_config(config).save_pretrained(wider)
    peft_adapter(wider, tmp_path / "other")
    found = problems(tmp_path, recipe_with(tmp_path, llama, {"from": "other"}))
    assert len(found) == 1 and "adapters.peft.from: the adapter does not fit " in found[0]
    assert "layer 0 k_proj: lora_A [8, 128] and lora_B [32, 8], the model needs [8, 64] and [32, 8]" in found[0]


def test_adapters_in_one_package_must_share_modules(tmp_path, llama, monkeypatch):
    monkeypatch.chdir(tmp_path)
    peft_adapter(llama, tmp_path / "mlp", modules=["gate_proj", "up_proj"])
    found = problems(tmp_path, recipe_with(tmp_path, llama, {"from": "mlp"}))
    assert any(
        "adapters.peft.from: target modules ['gate_proj', 'up_proj'] differ from adapter 'contacts'" in p for p in found
    )


def test_evaluation_datasets_scores_only_adapters_trained_elsewhere(tmp_path, llama, monkeypatch):
    monkeypatch.chdir(tmp_path)
    peft_adapter(llama, tmp_path / "mine")
    found = problems(tmp_path, recipe_with(tmp_path, llama, {"from": "mine"}, datasets={"dates": "dates"}))
    assert found[0].endswith(
        "evaluation.datasets.dates: this adapter is trained here and scored on its own dataset's held-out rows"
    )


@pytest.mark.slow
def test_a_plain_peft_adapter_is_packaged_beside_trained_ones(tmp_path, llama):
    """Exported from its folder (no training), smoke-tested, scored on evaluation.datasets and checked for
    parity against PyTorch with the same PEFT adapter; it changes the answers only when it is active."""
    peft_adapter(llama, tmp_path / "mine")
    recipe = recipe_with(tmp_path, llama, {"from": "mine"}, datasets={"peft": "dates"})
    recipe["evaluation"]["metrics"]["dates"] = ["exact_match"]
    path = write_recipe(tmp_path, recipe)
    log = io.StringIO()
    result = run_recipe(load_recipe(path), console=Console(log))
    assert "adapter peft: trained elsewhere, r=8 on k_proj,o_proj,q_proj,v_proj" in log.getvalue()
    assert "cpu/peft: LoRA r=8 on k_proj,o_proj,q_proj,v_proj, trained elsewhere (mine)" in log.getvalue()

    package = result.packages["cpu"]
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest["adapters"]["peft"]
    assert (entry["from"], entry["r"], entry["alpha"], entry["method"]) == ("mine", 8, 16, "lora")
    assert entry["dataset"]["name"] == "dates" and manifest["smoke_check"] == "passed"
    assert sorted(p.name for p in (package / "adapters").iterdir()) == [
        "contacts.onnx_adapter", "dates.onnx_adapter", "peft.onnx_adapter"
    ]  # fmt: skip
    scores = json.loads((package / "eval.json").read_text(encoding="utf-8"))
    assert scores["parity"]["ok"] and "peft" in scores["parity"]["by"]
    assert set(scores["adapters"]["peft"]["metrics"]) == {"exact_match"}

    from test_end_to_end import first_logits

    base, imported = first_logits(package, None), first_logits(package, "peft")
    assert not np.allclose(base, imported), "the adapter changes the answers when active"
    assert np.allclose(first_logits(package, None), base), "and the base is unchanged without it"
    assert (
        yaml.safe_load(
            (tmp_path / "out" / "tiny" / "_peft" / "peft" / "adapter_config.json").read_text(encoding="utf-8")
        )["r"]
        == 8
    )
