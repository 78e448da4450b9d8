"""Where olive-flows finds its own files and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# A wheel carries schemas/ and recipes/ in olive_flows/bundled/ (copied there by setup.py, same layout);
# a checkout or editable install has no such folder and reads the repository's top-level ones, the only sources.
BUNDLED_DIR = PACKAGE_DIR / "bundled"
_FILES_ROOT = BUNDLED_DIR if (BUNDLED_DIR / "schemas" / "recipe.schema.json").is_file() else REPO_ROOT
SCHEMA_PATH = _FILES_ROOT / "schemas" / "recipe.schema.json"
RECIPES_DIR = _FILES_ROOT / "recipes"
METADATA_DIR = PACKAGE_DIR / "metadata"


def cache_dir() -> Path:
    """User cache for materialized built-in models: $OLIVE_FLOWS_CACHE, else $XDG_CACHE_HOME/olive-flows."""
    explicit = os.environ.get("OLIVE_FLOWS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "olive-flows"


def portable_path(value: str) -> Path:
    """A path as a recipe or a command line writes it, on any system: a relative path written on
    Windows (``data\\rows.jsonl``) names the same file on Linux and macOS, where a backslash would
    otherwise be part of the file name."""
    return Path(value.replace("\\", "/") if os.sep == "/" else value).expanduser()


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, so messages stay short."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
