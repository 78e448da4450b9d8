"""Shared fixtures: the built-in model's tokenizer and tiny random models of each architecture.

The tiny models are real transformers models with random weights and the real SmolLM2 tokenizer,
small enough that a whole run (train, ModelBuilder export, ExtractAdapters, generation) takes
seconds. Nothing is mocked: Olive, peft, ModelBuilder and onnxruntime-genai all run for real.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_DATA = REPO / "recipes" / "data" / "quickstart"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

# Tiny configs per architecture; vocab and special tokens come from SmolLM2's real tokenizer.
TINY_CONFIGS = {
    "llama": {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    },
    "phi3": {
        "architectures": ["Phi3ForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    },
}
TINY_CONFIGS["qwen2"] = {**TINY_CONFIGS["llama"], "architectures": ["Qwen2ForCausalLM"]}
TINY_CONFIGS["qwen3"] = {**TINY_CONFIGS["llama"], "architectures": ["Qwen3ForCausalLM"], "head_dim": 16}
TINY_CONFIGS["mistral"] = {
    **TINY_CONFIGS["llama"],
    "architectures": ["MistralForCausalLM"],
    "tie_word_embeddings": False,
}
TINY_CONFIGS["gemma2"] = {
    **TINY_CONFIGS["llama"],
    "architectures": ["Gemma2ForCausalLM"],
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "sliding_window": 1024,  # within the tiny context (Gemma 2 2B: 4096 of 8192)
}
TINY_CONFIGS["gemma3_text"] = {
    **TINY_CONFIGS["gemma2"],
    "architectures": ["Gemma3ForCausalLM"],
    "layer_types": ["sliding_attention", "full_attention"],  # each RoPE base (10k local, 1M global) in use
}
TINY_CONFIGS["granite"] = {**TINY_CONFIGS["llama"], "architectures": ["GraniteForCausalLM"]}
TINY_CONFIGS["smollm3"] = {**TINY_CONFIGS["llama"], "architectures": ["SmolLM3ForCausalLM"]}


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The materialized built-in SmolLM2 folder (created once per machine, then reused)."""
    from olive_flows.models.builtin import materialize

    return materialize("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smollm2_folder):
    """Factory: a tiny random model folder of an architecture, with SmolLM2's tokenizer."""
    made: dict[str, Path] = {}

    def make(model_type: str) -> Path:
        if model_type in made:
            return made[model_type]
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        folder = tmp_path_factory.mktemp(f"tiny-{model_type}")
        source = json.loads((smollm2_folder / "config.json").read_text(encoding="utf-8"))
        special = {k: source[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
        config = AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type], **special)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        for name in TOKENIZER_FILES:
            shutil.copy(smollm2_folder / name, folder / name)
        made[model_type] = folder
        return folder

    return make


@pytest.fixture
def tiny_job(tiny_model, tmp_path):
    """The first compiled job (train, export) of ``tiny_recipe`` on the tiny Llama, 12 rows per dataset."""
    from olive_flows.compile.workflow import compile_recipe
    from olive_flows.data.prepare import prepare_dataset
    from olive_flows.layout import Workspace
    from olive_flows.models.resolve import model_facts, model_ref
    from olive_flows.validate.load import load_recipe

    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe(tiny_model("llama"), tmp_path / "out"), rows=12))
    workspace = Workspace.of(recipe)
    ref = model_ref(recipe)
    datasets = {d: prepare_dataset(recipe, d, workspace.data) for d in recipe.datasets}
    return compile_recipe(recipe, ref, model_facts(ref), datasets, workspace)[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in the test's folder, so that messages show short relative paths (use with
    ``pytestmark = pytest.mark.usefixtures("in_tmp")``)."""
    monkeypatch.chdir(tmp_path)


def chat(user: str, answer: str = "ok", system: str | None = None) -> dict:
    """A chat row: an optional system turn, a user turn and the assistant's answer."""
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented) to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def minimal_recipe(**fields) -> dict:
    """The smallest valid recipe (the built-in model, one dataset d, one adapter a, one cpu target),
    with ``fields`` replacing its top-level fields."""
    return {
        "schema_version": 1,
        "name": "minimal",
        "model": {"id": "builtin:smollm2-135m-instruct"},
        "datasets": {"d": {"path": "d.jsonl"}},
        "adapters": {"a": {"dataset": "d"}},
        "targets": {"cpu": {"device": "cpu"}},
        **fields,
    }


def write_recipe(folder: Path, recipe: dict, rows: int = 40) -> Path:
    """Write ``recipe`` to folder/recipe.yaml with the first ``rows`` rows of each quickstart dataset."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in ("contacts", "dates"):
        lines = (QUICKSTART_DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def tiny_recipe(model: Path, output: Path, **targets: dict) -> dict:
    """A two-adapter recipe (different ranks, same modules) for a tiny model; a few steps each."""
    training = {"max_steps": 3, "batch_size": 2, "learning_rate": 0.01, "max_seq_len": 96}
    return {
        "schema_version": 1,
        "name": "tiny",
        "model": {"id": str(model)},
        "datasets": {
            "contacts": {"path": "data/contacts.jsonl", "eval_split": 0.1},
            "dates": {"path": "data/dates.jsonl", "eval_split": 0.1},
        },
        "adapters": {
            "contacts": {"dataset": "contacts", "r": 8, "training": training},
            "dates": {"dataset": "dates", "r": 4, "training": training},
        },
        "targets": targets or {"cpu": {"device": "cpu", "precision": "int4"}},
        "evaluation": {
            "max_new_tokens": 4,
            "max_rows": 2,
            "metrics": {"contacts": ["json_fields"], "dates": ["exact_match"]},
        },
        "output": {"dir": str(output)},
    }


def write_tiny_quickstart(path: Path, model: Path, steps: int, evaluation: dict) -> Path:
    """The built-in quickstart recipe with a tiny random model, ``steps`` of batch 2 per adapter and the
    ``evaluation`` settings given, written to ``path`` (the fast equivalent of ``make finetune``)."""
    recipe = {
        "extends": str(REPO / "recipes" / "quickstart.yaml"),
        "model": {"id": str(model)},
        "adapters": {a: {"training": {"max_steps": steps, "batch_size": 2}} for a in ("contacts", "dates")},
        "evaluation": evaluation,
    }
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Factory: place a model folder in a Hugging Face cache under a hub id, as a download leaves it
    (blobs aside): ``models--<org>--<name>/snapshots/<commit>/`` and ``refs/main``. The cache is
    this test's own (HF_HUB_CACHE); returns the snapshot folder."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def place(model_id: str, folder: Path) -> Path:
        repo = cache / f"models--{model_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / COMMIT)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
        return repo / "snapshots" / COMMIT

    return place


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory, tiny_model) -> Path:
    """A built package of the tiny Llama with two adapters (contacts r=8, dates r=4) trained enough to
    answer differently from the base, made once."""
    import io

    from olive_flows.console import Console
    from olive_flows.pipeline import run_recipe
    from olive_flows.validate.load import load_recipe

    folder = tmp_path_factory.mktemp("tiny-package")
    recipe = tiny_recipe(tiny_model("llama"), folder / "out")
    for adapter in recipe["adapters"].values():  # long enough that each adapter changes the answers
        adapter["training"] |= {"max_steps": 40, "learning_rate": 0.05}
    recipe = load_recipe(write_recipe(folder, recipe))
    return run_recipe(recipe, offline=True, console=Console(io.StringIO())).packages["cpu"]
