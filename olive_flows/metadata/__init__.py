"""Metadata that drives olive-flows (architectures, targets, built-in models), kept as JSON data."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from olive_flows.paths import METADATA_DIR


@cache
def load(name: str) -> dict[str, Any]:
    """Return the parsed metadata file ``<name>.json``."""
    with open(METADATA_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def methods() -> dict[str, dict[str, Any]]:
    """Every fine-tuning method of methods.json by name, without its ``_comment``."""
    return {name: method for name, method in load("methods").items() if not name.startswith("_")}


def method(name: str) -> dict[str, Any]:
    """One fine-tuning method of methods.json (its Olive pass, what it needs, whether it exports)."""
    return methods()[name]


def architecture(model_type: str) -> dict[str, Any] | None:
    """Facts about one Hugging Face ``model_type`` (its LoRA modules and their shapes), or None when
    olive-flows has none."""
    known = load("architectures")
    facts = known["architectures"].get(model_type)
    return {**facts, "lora_shapes": known["lora_shape_sets"][facts["lora_shapes"]]} if facts else None


def target_profile(provider: str) -> dict[str, Any]:
    """The profile of an execution provider (device, precisions, runtime package)."""
    return load("targets")["profiles"][provider]


def default_provider(device: str) -> str:
    """The execution provider a target on ``device`` uses when the recipe names none."""
    return load("targets")["device_default_provider"][device]


def provider_of(device: str, provider: str | None) -> str:
    """A recipe target's execution provider: its own, else its device's default."""
    return provider or default_provider(device)


def builtin_model(name: str) -> dict[str, Any] | None:
    """The registry entry of ``builtin:<name>``, or None."""
    return load("builtin_models").get(name)
