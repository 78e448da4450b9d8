"""Assemble one target's multi-adapter package from the Olive outputs of its adapters.

Every adapter's workflow exports the same base graph (LoRA weights become optional inputs), so the
package holds one copy of the base files and one .onnx_adapter file per adapter. The copies are
compared first (graphs after dropping rank hints, other files byte for byte): a package must never
pair an adapter with a base it was not built on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from pathlib import Path

from olive_flows.files import sha256_file
from olive_flows.layout import ADAPTER_DIR, adapter_file
from olive_flows.package.graph import shared_graph

BASE_FILE_PATTERNS = (
    "*.onnx",
    "*.onnx.data",
    "genai_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
EXTRACTED_ADAPTER = "adapter_weights.onnx_adapter"
EXTRACTED_NPZ = "adapter_weights.npz"  # where metadata/targets.json: adapter_weights_format says numpy


class PackageError(Exception):
    """The Olive outputs cannot form a valid package; the CLI exits with code 4."""

    exit_code = 4


def base_files(folder: Path) -> list[str]:
    """Names of the files in an Olive output folder that belong to the shared base package."""
    return sorted(p.name for p in folder.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in BASE_FILE_PATTERNS))


# Loading options transformers writes into tokenizer_config.json when it saves a tokenizer; they
# record how the training process loaded it (online or offline), not the tokenizer.
LOAD_OPTIONS = ("local_files_only",)


def _normalized(path: Path) -> bytes | None:
    """The package's version of a base file whose raw bytes differ between exports in ways that do
    not matter: the shared graph of a model, a tokenizer config without loading options. None: the
    file goes into the package as it is."""
    if path.name.endswith(".onnx"):
        return shared_graph(path)
    if path.name == "tokenizer_config.json":
        config = json.loads(path.read_text(encoding="utf-8"))
        return (json.dumps({k: v for k, v in config.items() if k not in LOAD_OPTIONS}, indent=2) + "\n").encode()
    return None


def _digest(path: Path, normalized: bytes | None) -> str:
    return hashlib.sha256(normalized).hexdigest() if normalized is not None else sha256_file(path)


def assemble(outputs: dict[str, Path], staging: Path) -> None:
    """Copy one base and every adapter from ``outputs`` (adapter name -> Olive output folder)."""
    names = list(outputs)
    first = outputs[names[0]]
    files = base_files(first)
    if not any(f.endswith(".onnx") for f in files):
        raise PackageError(f"no ONNX model in {first}")
    normalized = {f: _normalized(first / f) for f in files}
    digests = {f: _digest(first / f, normalized[f]) for f in files}
    for adapter in names[1:]:
        folder = outputs[adapter]
        if base_files(folder) != files:
            raise PackageError(f"adapter '{adapter}' was exported with different base files than '{names[0]}'")
        for f in files:
            if _digest(folder / f, _normalized(folder / f)) != digests[f]:
                raise PackageError(
                    f"{f} of adapter '{adapter}' differs from that of '{names[0]}': the adapters do not share one base"
                )
    staging.mkdir(parents=True)
    for f in files:
        if normalized[f] is None:
            shutil.copy2(first / f, staging / f)
        else:
            (staging / f).write_bytes(normalized[f])
    (staging / ADAPTER_DIR).mkdir()
    input_types: dict[str, int] = {}  # of the package's graph, read once when a first .npz needs them
    for adapter, folder in outputs.items():
        destination = adapter_file(staging, adapter)
        if (folder / EXTRACTED_ADAPTER).is_file():
            shutil.copy2(folder / EXTRACTED_ADAPTER, destination)
        elif (folder / EXTRACTED_NPZ).is_file():
            input_types = input_types or graph_input_types(next(staging.glob("*.onnx")))
            onnx_adapter_from_npz(folder / EXTRACTED_NPZ, input_types, destination)
        else:
            raise PackageError(f"Olive's output for adapter '{adapter}' has no {EXTRACTED_ADAPTER} ({folder})")


def graph_input_types(graph: Path) -> dict[str, int]:
    """ONNX element type of each input of ``graph`` (weights left on disk)."""
    import onnx

    return {i.name: i.type.tensor_type.elem_type for i in onnx.load(graph, load_external_data=False).graph.input}


def onnx_adapter_from_npz(weights: Path, types: dict[str, int], destination: Path) -> None:
    """Write the .npz adapter ``weights`` as an .onnx_adapter file, each tensor typed like the
    graph input it binds to (``types``: graph_input_types): numpy has no bfloat16, so the .npz
    holds bf16 tensors as raw 2-byte values that onnxruntime is told the type of."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    parameters = {}
    with np.load(weights) as arrays:
        for name in arrays.files:
            array = np.ascontiguousarray(arrays[name])
            if types.get(name) == onnx.TensorProto.BFLOAT16:
                parameters[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    array.view(np.uint16), onnx.TensorProto.BFLOAT16
                )
            else:
                parameters[name] = ort.OrtValue.ortvalue_from_numpy(array)
    adapter = ort.AdapterFormat()
    adapter.set_parameters(parameters)
    adapter.export_adapter(str(destination))
