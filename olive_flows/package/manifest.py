"""manifest.json: what a package was built from, with what, and the sha256 of every file in it."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from olive_flows.files import sha256_file

MANIFEST = "manifest.json"
RESOLVED_RECIPE = "recipe.json"  # the recipe the package was built from, every default filled in
FORMAT = "olive-flows-package/1"
VERSIONED_PACKAGES = ("olive-flows", "olive-ai", "onnxruntime", "onnxruntime-genai", "torch", "transformers", "peft")


def recipe_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved recipe as canonical JSON: the same recipe always hashes the same."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def versions() -> dict[str, str | None]:
    """Installed versions of the packages a package's behaviour depends on."""
    found: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = None
    return found


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``folder`` except the manifest, by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
