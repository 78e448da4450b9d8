"""LoRA adapters trained elsewhere (``adapters.<name>.from``): what a PEFT adapter folder holds, and
whether it fits the recipe's base model. Read without torch: adapter_config.json and the tensor
shapes in adapter_model.safetensors' header, so validation stays fast.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olive_flows.models.resolve import HUB_ID
from olive_flows.paths import display_path
from olive_flows.recipe.model import Recipe

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
LORA_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\..*?([A-Za-z0-9_]+)\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
# adapter_config.json settings whose effect the ONNX export cannot carry (the builder exports the
# lora_A and lora_B matrices with the scale alpha / r, and nothing else)
UNEXPORTABLE = {
    "use_dora": "DoRA's magnitude vectors",
    "use_rslora": "rank-stabilized scaling (alpha / sqrt(r))",
    "modules_to_save": "fully trained extra modules",
    "layers_to_transform": "a LoRA on only some layers",
}


def imported_folder(recipe: Recipe, name: str) -> Path | None:
    """The folder of adapter ``name``'s ``from``: a folder relative to the recipe that wrote it, or a
    Hugging Face id's snapshot in the local cache. None when neither is on disk (a hub id not fetched
    yet, or a folder that does not exist)."""
    source = recipe.adapters[name]["from"]
    local = recipe.resolve_path(("adapters", name, "from"))
    if local.is_dir():
        return local
    if not is_hub_id(source):
        return None
    from olive_flows.models.hub import cached_snapshot

    return cached_snapshot(source, None)


def is_hub_id(source: str) -> bool:
    """Whether ``from`` reads as a Hugging Face id rather than a folder."""
    return not source.startswith((".", "/", "~")) and bool(HUB_ID.match(source))


class NotAnAdapter(ValueError):
    """The folder is not a PEFT LoRA adapter olive-flows can package (the message says why)."""


@dataclass(frozen=True)
class ImportedAdapter:
    """A PEFT LoRA adapter folder as saved by ``save_pretrained``."""

    folder: Path
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape, from the safetensors header

    @property
    def r(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return self.config.get("lora_alpha", self.r)

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    def lora_shapes(self) -> dict[tuple[int, str], tuple[tuple[int, ...], tuple[int, ...]]]:
        """(layer, module) -> (lora_A shape, lora_B shape)."""
        halves: dict[tuple[int, str], dict[str, tuple[int, ...]]] = {}
        for name, shape in self.shapes.items():
            match = LORA_KEY.search(name)
            if match:
                halves.setdefault((int(match.group(1)), match.group(2)), {})[match.group(3)] = shape
        return {key: (half.get("A", ()), half.get("B", ())) for key, half in halves.items()}

    @property
    def modules(self) -> list[str]:
        """The modules the adapter puts LoRA on, by their Hugging Face names."""
        return sorted({module for _, module in self.lora_shapes()})


def read_imported(folder: Path) -> ImportedAdapter:
    """The adapter in ``folder``; NotAnAdapter says what is missing or cannot be packaged."""
    config_path, weights = folder / CONFIG, folder / WEIGHTS
    shown, shown_config, shown_weights = display_path(folder), display_path(config_path), display_path(weights)
    if not config_path.is_file():
        raise NotAnAdapter(f"{shown} has no {CONFIG}: not a PEFT adapter folder (as save_pretrained writes one)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAnAdapter(f"{shown_config} is not valid JSON: {exc}") from None
    if config.get("peft_type") != "LORA":
        raise NotAnAdapter(f"{shown_config} is a {config.get('peft_type')} adapter; only LoRA adapters can be packaged")
    for key, what in UNEXPORTABLE.items():
        if config.get(key):
            raise NotAnAdapter(f"{shown_config} sets {key}: the ONNX export cannot carry {what}")
    if not weights.is_file():
        found = (
            "adapter_model.bin: save it with safetensors (save_pretrained's default)"
            if (folder / "adapter_model.bin").is_file()
            else "no weights"
        )
        raise NotAnAdapter(f"{shown} has no {WEIGHTS} ({found})")
    adapter = ImportedAdapter(folder, config, _safetensors_shapes(weights))
    if not adapter.modules:
        raise NotAnAdapter(f"{shown_weights} holds no lora_A/lora_B weights of numbered layers")
    return adapter


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's JSON header (8-byte length, then the header)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise NotAnAdapter(f"{display_path(path)} is not a safetensors file") from None
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


def shape_problems(adapter: ImportedAdapter, config: dict[str, Any], arch: dict[str, Any]) -> list[str]:
    """Where the adapter does not fit a model with this config.json (empty: it fits): unknown modules,
    layers the model does not have, LoRA matrices whose sizes are not the model's."""
    sizes = {
        **config,
        "head_dim": config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
        "num_key_value_heads": config.get("num_key_value_heads") or config["num_attention_heads"],
    }
    found = []
    for (layer, module), (a, b) in sorted(adapter.lora_shapes().items()):
        if module not in arch["lora_shapes"]:
            found.append(
                f"module {module} is not a LoRA module of this architecture ({', '.join(arch['lora_modules'])})"
            )
            continue
        if layer >= config["num_hidden_layers"]:
            found.append(f"layer {layer} does not exist (the model has {config['num_hidden_layers']})")
            continue
        size_in, size_out = (eval(expr, {"__builtins__": {}}, sizes) for expr in arch["lora_shapes"][module])
        expected = ((adapter.r, size_in), (size_out, adapter.r))
        if (a, b) != expected:
            found.append(
                f"layer {layer} {module}: lora_A {list(a)} and lora_B {list(b)}, the model needs {list(expected[0])} and {list(expected[1])}"
            )
    return list(dict.fromkeys(found))
