"""Hub models: a cached model runs with no network at all; one that cannot be had stops the run at once."""

from __future__ import annotations

import io

import pytest
import yaml
from conftest import COMMIT, REPO

from olive_flows.cli.main import main
from olive_flows.compile.plan import prepare_model
from olive_flows.console import Console
from olive_flows.models import hub
from olive_flows.models.resolve import model_ref
from olive_flows.validate.load import load_recipe

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def hub_recipe(tmp_path, model_id: str) -> str:
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text(encoding="utf-8"))
    recipe["model"] = {"id": model_id}
    recipe["targets"]["cpu"].pop("int4", None)
    recipe["output"] = {"dir": str(tmp_path / "out")}
    for adapter in recipe["adapters"].values():
        adapter["target_modules"] = ["q_proj", "v_proj"]  # olive-flows cannot know the architecture of a missing model
    for dataset in recipe["datasets"].values():
        dataset["path"] = str(REPO / "recipes" / dataset["path"])
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return str(path)


def test_a_cached_model_resolves_offline_to_its_snapshot_and_commit(tmp_path, monkeypatch, hub_cache, tiny_model):
    snapshot = hub_cache(MODEL, tiny_model("llama"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = model_ref(load_recipe(hub_recipe(tmp_path, MODEL)))
    assert (ref.kind, ref.path) == ("hub", MODEL)
    resolved, facts = prepare_model(ref, Console(io.StringIO()), model_log=tmp_path / "model.log")
    assert resolved.path == str(snapshot) and resolved.revision == COMMIT, "Olive gets a local folder, pinned"
    assert facts == {"model_type": "llama", "num_hidden_layers": 2}


def test_a_model_missing_from_the_cache_offline_stops_the_run_before_any_work(tmp_path, monkeypatch, capsys, hub_cache):
    """The catalog's phi-lora on a machine that never downloaded Phi-3."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.ModelUnavailable):
        hub.snapshot(MODEL, None)
    assert main(["run", "phi-lora", f"output.dir={tmp_path / 'out'}", "--offline"]) == 7
    err = capsys.readouterr().err.strip().splitlines()
    phi = "microsoft/Phi-3-mini-4k-instruct"
    assert len(err) == 1 and err[0].startswith(f"error: model {phi} cannot be downloaded: it is not in the")
    assert "model.id to a local model folder" in err[0]
    assert not (tmp_path / "out" / "phi-lora" / "_work" / "data").exists(), "no data was prepared"


def test_a_model_the_hub_cannot_give_is_one_line_with_its_own_exit_code(tmp_path, monkeypatch, capsys, hub_cache):
    """No such model: without network the hub cannot be reached, with it the model does not exist."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    missing = "olive-flows-tests/no-such-model"
    assert main(["run", hub_recipe(tmp_path, missing)]) == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: model {missing} cannot be downloaded: ")
    assert "Traceback" not in err[0]
