"""Which base model a recipe means, and the few facts about it that compile needs.

Nothing here imports torch or transformers: validate and compile must stay fast.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows import metadata
from olive_flows.paths import cache_dir, display_path
from olive_flows.problems import Problem, did_you_mean
from olive_flows.recipe.model import Recipe

BUILTIN_PREFIX = "builtin:"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: ``path`` is what Olive loads (a local folder, a Hub id, or once a
    run has fetched it, the Hub model's snapshot folder with ``revision`` its commit)."""

    id: str
    kind: str  # "builtin", "local" or "hub"
    path: str
    revision: str | None
    trust_remote_code: bool

    @property
    def builtin_name(self) -> str:
        return self.id.removeprefix(BUILTIN_PREFIX)


def builtin_folder(name: str) -> Path:
    """Where ``builtin:<name>`` is materialized as a Hugging Face folder."""
    return cache_dir() / "models" / name


def model_ref_problems(recipe: Recipe) -> list[Problem]:
    """Why the recipe's model.id cannot be resolved, or nothing."""
    model_id = recipe.data["model"]["id"]
    where = ("model", "id")
    if model_id.startswith(BUILTIN_PREFIX):
        name = model_id.removeprefix(BUILTIN_PREFIX)
        known = metadata.load("builtin_models")
        if name not in known:
            hint = did_you_mean(name, known) or f"built-in models: {', '.join(known)}"
            return [recipe.problem(where, f"unknown built-in model '{name}'", hint)]
        return []
    local = recipe.resolve_path(where)
    if local.is_dir():
        config = local / "config.json"
        if not config.is_file():
            return [
                recipe.problem(
                    where, f"local model folder {display_path(local)} has no config.json (not a Hugging Face model)"
                )
            ]
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            return [recipe.problem(where, f"{display_path(config)} is not valid JSON: {exc}")]
        return []
    if model_id.startswith((".", "/", "~")) or not HUB_ID.match(model_id):
        return [
            recipe.problem(
                where, f"local model folder {display_path(local)} does not exist (and it is not a Hugging Face id)"
            )
        ]
    return []


def model_ref(recipe: Recipe) -> ModelRef:
    """The recipe's model as a ModelRef; call after validation (model_ref_problems is empty)."""
    model = recipe.data["model"]
    model_id = model["id"]
    if model_id.startswith(BUILTIN_PREFIX):
        path = builtin_folder(model_id.removeprefix(BUILTIN_PREFIX))
        return ModelRef(model_id, "builtin", str(path), None, False)
    local = recipe.resolve_path(("model", "id"))
    if local.is_dir():
        return ModelRef(model_id, "local", str(local), None, model["trust_remote_code"])
    return ModelRef(model_id, "hub", model_id, model["revision"], model["trust_remote_code"])


def model_config(ref: ModelRef) -> dict[str, Any] | None:
    """The model's config.json, read without any network access: from a local folder, a materialized
    built-in, a fetched snapshot or the Hugging Face cache. None when it is not on disk."""
    config_path: Path | None = None
    if ref.kind in {"local", "builtin"} or Path(ref.path).is_absolute():  # a hub model's snapshot folder
        config_path = Path(ref.path) / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref.path, "config.json", revision=ref.revision)
        config_path = Path(cached) if isinstance(cached, str) else None
    if config_path is not None and config_path.is_file():
        return json.loads(config_path.read_text(encoding="utf-8"))
    return None


def model_facts(ref: ModelRef) -> dict[str, Any] | None:
    """``model_type`` and ``num_hidden_layers`` of the model, read without any network access.

    Sources, in order: the model's config.json on disk (model_config), then olive-flows' own
    metadata about built-in and catalog models. None when nothing is known.
    """
    config = model_config(ref)
    if config is not None:
        return {"model_type": config.get("model_type"), "num_hidden_layers": config.get("num_hidden_layers")}
    facts = (
        metadata.builtin_model(ref.builtin_name)
        if ref.kind == "builtin"
        else metadata.load("known_models").get(ref.path)
    )
    return {key: facts[key] for key in ("model_type", "num_hidden_layers")} if facts else None
