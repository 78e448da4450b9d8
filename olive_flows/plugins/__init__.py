"""Code Olive loads by module path: olive-flows' own passes and its data component.

What is here is described in metadata/plugins.json. Olive only runs passes named in the package
config it is handed, so ``package_config()`` adds them to Olive's own; compiled data configs name
the tokenization component's file as their ``user_script``. ``olive run`` on a compiled config
with the package config written beside it finds everything too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from olive_flows import metadata

PACKAGE_CONFIG_FILE = "olive_package_config.json"
TOKENIZE_COMPONENT = "olive_flows_tokenize"


def build_pass() -> str:
    """The pass compiled workflows build the ONNX model with (olive-flows' ModelBuilder)."""
    return metadata.load("plugins")["build_pass"]


def component_file(name: str) -> Path:
    """The file Olive loads (as a data config's user_script) to register data component ``name``."""
    return Path(__file__).with_name(metadata.load("plugins")["data_components"][name])


def package_config() -> dict[str, Any]:
    """Olive's own package config plus olive-flows' passes; ``olive run --package-config`` takes it too.
    Read from Olive's folder without importing Olive, which would add seconds to every compile.
    Each subclass of an Olive pass (the training passes of metadata/methods.json among them) is
    registered like the Olive pass it extends."""
    plugins = metadata.load("plugins")
    olive_dir = Path(next(iter(importlib.util.find_spec("olive").submodule_search_locations)))
    config = json.loads((olive_dir / "olive_config.json").read_text(encoding="utf-8"))
    subclassed = {
        name: {**config["passes"][entry["extends"]], "module_path": entry["module_path"]}
        for name, entry in plugins["subclassed_passes"].items()
    }
    training = {
        method["pass"]: {
            **config["passes"][method["olive_pass"]],
            "module_path": f"{plugins['training_passes']}.{method['pass']}",
        }
        for method in metadata.methods().values()
    }
    config["passes"] = {**config["passes"], **plugins["passes"], **subclassed, **training}
    return config
