"""Recipe loading: schema errors and rule violations point at the file, line and field, all at once."""

from __future__ import annotations

import json
import textwrap

import pytest

from olive_flows import metadata
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe

VALID = """\
schema_version: 1
name: demo
model:
  id: builtin:smollm2-135m-instruct
datasets:
  people:
    path: people.jsonl
adapters:
  first:
    dataset: people
  second:
    dataset: people
    r: 4
targets:
  cpu:
    device: cpu
"""
ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


pytestmark = pytest.mark.usefixtures("in_tmp")


def write_demo(tmp_path, text: str, rows: str = ROW * 3):
    (tmp_path / "people.jsonl").write_text(rows, encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path, text: str, overrides=(), rows: str = ROW * 3) -> list[str]:
    with pytest.raises(UserError) as info:
        load_recipe(write_demo(tmp_path, text, rows), overrides)
    return [p.format() for p in info.value.problems]


def test_valid_recipe_loads_with_defaults(tmp_path):
    recipe = load_recipe(write_demo(tmp_path, VALID))
    assert recipe.adapters["first"]["r"] == 16 and recipe.adapters["second"]["r"] == 4
    assert recipe.target_adapters("cpu") == ["first", "second"]


def test_misspelled_key_names_line_and_suggests(tmp_path):
    found = problems(tmp_path, VALID.replace("    r: 4", "    lora_r: 4"))
    assert found == [
        "recipe.yaml:13:5: adapters.second.lora_r: unknown field; did you mean 'r'? (olive-flows' name for lora_r)"
    ]


def test_every_problem_is_reported_at_once(tmp_path):
    text = VALID.replace("    r: 4", "    r: four").replace("device: cpu", "device: cpuu")
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert found[0].startswith("recipe.yaml:13:8: adapters.second.r: expected integer; found string")
    assert found[1] == (
        "recipe.yaml:16:13: targets.cpu.device: expected one of cpu, gpu, npu, dml; found string \"cpuu\"; did you mean 'cpu'?"
    )


def test_duplicate_keys_are_errors(tmp_path):
    found = problems(tmp_path, VALID + "  cpu:\n    device: gpu\n")
    assert found == ["recipe.yaml:17:3: targets.cpu: duplicate key 'cpu' (first set on line 15)"]


def test_dangling_dataset_reference(tmp_path):
    found = problems(tmp_path, VALID.replace("dataset: people\n  second", "dataset: peeple\n  second"))
    assert found == ["recipe.yaml:10:14: adapters.first.dataset: no dataset named 'peeple'; did you mean 'people'?"]


def test_adapters_in_one_target_must_share_modules(tmp_path):
    found = problems(tmp_path, VALID.replace("    r: 4", "    r: 4\n    target_modules: [q_proj]"))
    assert len(found) == 1
    assert "recipe.yaml:14:21: adapters.second.target_modules: target modules ['q_proj'] differ" in found[0]


def test_precision_the_provider_cannot_produce(tmp_path):
    found = problems(tmp_path, VALID.replace("device: cpu", "device: cpu\n    precision: fp16"))
    assert found == [
        "recipe.yaml:17:16: targets.cpu.precision: fp16 is not available for CPUExecutionProvider (device cpu); "
        "choose one of int4, int8, fp32"
    ]


def test_bad_data_rows_are_caught_at_validation(tmp_path):
    bad = '{"messages": [{"role": "user", "content": "only a question"}]}\n'
    found = problems(tmp_path, VALID, rows=ROW + bad)
    assert found == [
        "recipe.yaml:7:11: datasets.people.path: people.jsonl:2:1: not a valid chat row (format detected from the first row): "
        "the conversation must end with an assistant message (the text the adapter learns)"
    ]


def test_unsafe_names_are_rejected(tmp_path):
    found = problems(tmp_path, VALID.replace("name: demo", "name: ../escape"))
    assert found[0].startswith("recipe.yaml:2:7: name: must be a safe folder name")


def test_overrides_are_checked_like_the_file(tmp_path):
    recipe = load_recipe(write_demo(tmp_path, VALID), ["adapters.first.r=32", "targets.cpu.precision=fp32"])
    assert recipe.adapters["first"]["r"] == 32 and recipe.targets["cpu"]["precision"] == "fp32"
    found = problems(tmp_path, VALID, ["adapters.first.r=big"])
    assert found == ["override 'adapters.first.r=big': adapters.first.r: expected integer; found string \"big\""]


def test_null_override_restores_the_default(tmp_path):
    text = VALID.replace("    r: 4", "    r: 4\n    training: {epochs: 3}")
    recipe = load_recipe(
        write_demo(tmp_path, text), ["adapters.second.training.epochs=null", "adapters.second.training.max_steps=5"]
    )
    assert recipe.adapters["second"]["training"]["max_steps"] == 5


def test_max_steps_and_epochs_together_are_an_error(tmp_path):
    found = problems(tmp_path, VALID.replace("    r: 4", "    r: 4\n    training: {epochs: 3, max_steps: 5}"))
    assert found == ["recipe.yaml:14:15: adapters.second.training: set either max_steps or epochs, not both"]


def test_yaml_syntax_error_has_a_location(tmp_path):
    found = problems(tmp_path, VALID + "targets: [\n")
    assert len(found) == 1 and found[0].startswith("recipe.yaml:") and "invalid YAML" in found[0]


def test_builtin_recipes_validate():
    for name in ("quickstart", "phi-lora"):
        assert load_recipe(name).name == name


def test_remote_code_is_never_silent():
    quiet = load_recipe("quickstart")
    assert not any("trust_remote_code" in w.format() for w in quiet.warnings)
    loud = load_recipe("quickstart", ["model.trust_remote_code=true"])
    assert any(
        "Python code shipped with builtin:smollm2-135m-instruct will run on this machine" in w.format()
        for w in loud.warnings
    )


def test_rounding_a_gguf_grid_again_is_warned_with_the_line():
    assert not load_recipe("quickstart").warnings, "the quickstart keeps its Q4_1 weights exact"
    warned = [w.format() for w in load_recipe("quickstart", ["targets.cpu.int4.algorithm=k_quant_mixed"]).warnings]
    assert len(warned) == 1 and "quickstart.yaml:" in warned[0]
    assert "rounds its weights a second time" in warned[0] and "targets.cpu.int4.algorithm: q4_1" in warned[0]


def test_metrics_on_a_mix_with_a_declared_text_part(tmp_path):
    (tmp_path / "notes.jsonl").write_text('{"text": "a note"}\n', encoding="utf-8")
    text = VALID.replace(
        "    path: people.jsonl\n",
        "    path: people.jsonl\n  notes:\n    path: notes.jsonl\n    format: text\n  both:\n    mix: {people: 1, notes: 1}\n",
    )
    found = problems(tmp_path, text + "evaluation:\n  metrics:\n    both: [exact_match]\n")
    assert found == [
        "recipe.yaml:24:5: evaluation.metrics.both: task metrics need prompt and answer rows; "
        "mix part 'notes' is a text dataset (format: text)"
    ]


def test_metrics_on_datasets_with_answers_or_unreadable_at_validation_pass(tmp_path):
    (tmp_path / "qa.csv").write_text("question,answer\nq,a\n", encoding="utf-8")
    text = VALID.replace(
        "    path: people.jsonl\n",
        "    path: people.jsonl\n  qa:\n    path: qa.csv\n    template: {user: '{question}', assistant: '{answer}'}\n"
        "  hub:\n    hf: olive-flows/not-read-at-validation\n    split: train\n",
    )
    metrics = "evaluation:\n  metrics:\n    people: [exact_match]\n    qa: [exact_match]\n    hub: [exact_match]\n"
    assert load_recipe(write_demo(tmp_path, text + metrics)).data["evaluation"]["metrics"]["hub"] == ["exact_match"]


def model_folder(tmp_path, name: str, config: dict) -> str:
    """A local model folder holding only a config.json; the model.id that names it."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return f"./{name}"


SUPPORTED = ", ".join(sorted(metadata.load("architectures")["architectures"]))


def test_local_model_of_an_unknown_architecture_is_refused_at_model_id(tmp_path):
    gpt2 = model_folder(tmp_path, "gpt2", {"model_type": "gpt2", "n_layer": 12, "n_embd": 768})
    found = problems(tmp_path, VALID.replace("builtin:smollm2-135m-instruct", gpt2))
    assert found == [
        "recipe.yaml:4:7: model.id: model type 'gpt2' is not one olive-flows can train and export with LoRA "
        f"adapters; supported: {SUPPORTED}"
    ]


def test_supported_architectures_come_from_the_metadata(tmp_path, monkeypatch):
    olmo2 = model_folder(tmp_path, "olmo2", {"model_type": "olmo2", "num_hidden_layers": 16})
    load = metadata.load
    extended = {**load("architectures"), "architectures": {**load("architectures")["architectures"]}}
    extended["architectures"]["olmo2"] = extended["architectures"]["llama"]
    monkeypatch.setattr(metadata, "load", lambda name: extended if name == "architectures" else load(name))
    assert load_recipe(write_demo(tmp_path, VALID.replace("builtin:smollm2-135m-instruct", olmo2))).name == "demo"


def test_known_architecture_without_a_layer_count_is_refused_at_model_id(tmp_path):
    llama = model_folder(tmp_path, "llama", {"model_type": "llama", "hidden_size": 64})
    found = problems(tmp_path, VALID.replace("builtin:smollm2-135m-instruct", llama))
    assert found == [
        "recipe.yaml:4:7: model.id: the model's config.json (model type 'llama') has no num_hidden_layers, "
        "the layer count the ONNX export needs"
    ]


def test_local_model_with_a_broken_config_is_refused_at_model_id(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "llama",', encoding="utf-8")
    found = problems(tmp_path, VALID.replace("builtin:smollm2-135m-instruct", "./broken"))
    assert len(found) == 1 and found[0].startswith("recipe.yaml:4:7: model.id: broken/config.json is not valid JSON: ")


def test_hub_model_with_a_cached_config_of_an_unknown_architecture(tmp_path, monkeypatch):
    import huggingface_hub

    config = tmp_path / "cached-config.json"
    config.write_text(json.dumps({"model_type": "gpt2", "n_layer": 12}), encoding="utf-8")
    cached = {"openai-community/gpt2": str(config)}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, *_a, **_k: cached.get(repo))
    found = problems(tmp_path, VALID.replace("builtin:smollm2-135m-instruct", "openai-community/gpt2"))
    assert found == [
        "recipe.yaml:4:7: model.id: model type 'gpt2' is not one olive-flows can train and export with LoRA "
        f"adapters; supported: {SUPPORTED}"
    ]
    # A hub model known nowhere (not cached, not in metadata/known_models.json): as before, only
    # adapters that rely on the architecture's default target modules are refused.
    found = problems(tmp_path, VALID.replace("builtin:smollm2-135m-instruct", "someone/unknown-model"))
    assert found == [
        f"recipe.yaml:{line}:5: adapters.{name}: olive-flows has no default target modules for this model's "
        "architecture; set target_modules (for example [q_proj, v_proj])"
        for line, name in ((10, "first"), (12, "second"))
    ]
