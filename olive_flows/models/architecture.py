"""What olive-flows knows about a model's architecture: which modules can carry LoRA, and which an
adapter really trains (metadata/architectures.json)."""

from __future__ import annotations

from collections.abc import Sequence

from olive_flows import metadata
from olive_flows.models.imported import NotAnAdapter, imported_folder, read_imported
from olive_flows.models.resolve import model_facts, model_ref, model_ref_problems
from olive_flows.recipe.model import Recipe


def architecture_of(recipe: Recipe) -> dict | None:
    """olive-flows' metadata for the recipe's model architecture, when the model type is known."""
    if model_ref_problems(recipe):
        return None
    facts = model_facts(model_ref(recipe))
    return metadata.architecture(facts["model_type"]) if facts else None


def trained_modules(method: str, target_modules: Sequence[str] | None, arch: dict | None) -> list[str] | None:
    """The modules an adapter of ``method`` trains: every linear layer for a method whose Olive pass
    ignores target_modules, else its own list, else its architecture's default (None if unknown)."""
    if arch and metadata.method(method)["trains_every_linear"]:
        return list(arch["lora_modules"])
    if target_modules:
        return list(target_modules)
    return list(arch["default_target_modules"]) if arch else None


def adapter_modules(recipe: Recipe, name: str, arch: dict | None) -> list[str] | None:
    """The modules adapter ``name`` puts LoRA on: those of its weights for one trained elsewhere
    (None while its folder cannot be read), else the ones it trains (trained_modules)."""
    adapter = recipe.adapters[name]
    if adapter.get("from"):
        folder = imported_folder(recipe, name)
        try:
            return read_imported(folder).modules if folder else None
        except NotAnAdapter:
            return None
    return trained_modules(adapter["method"], adapter["target_modules"], arch)
