"""Read a recipe reference (a built-in name or a file) and command-line overrides into one document.

Order: parse YAML with positions -> resolve ``extends`` (deep merge) -> apply overrides. What comes
out is the recipe as written, with the location of every value; validate/load.py checks it.

Merging, for ``extends`` and for overrides alike: mappings merge key by key, the later one
winning; lists and scalars are replaced whole; a key set to null is removed, so that its default
(or nothing) applies again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from olive_flows.paths import display_path
from olive_flows.problems import Location, Problem, UserError, did_you_mean
from olive_flows.recipe.catalog import builtin_recipes
from olive_flows.recipe.source import SourceMap, parse_yaml


def find_recipe(ref: str, relative_to: Path | None = None) -> Path:
    """The file a recipe reference means: an existing path (relative to ``relative_to`` when
    given, else the working directory), else a built-in recipe name."""
    path = (relative_to or Path.cwd()) / Path(ref).expanduser()
    if path.is_file():
        return path
    builtin = builtin_recipes()
    if ref in builtin:
        return builtin[ref]
    hint = did_you_mean(ref, builtin) or f"built-in recipes: {', '.join(builtin)}"
    raise UserError([Problem(Location(ref), "", f"'{ref}' is neither a recipe file nor a built-in recipe", hint)])


def merge(base: Any, top: Any, smap: SourceMap, path: tuple = ()) -> Any:
    """``top`` merged over ``base`` (see the module docstring); ``smap`` loses replaced locations."""
    if not (isinstance(base, dict) and isinstance(top, dict)):
        return top
    merged = dict(base)
    for key, value in top.items():
        if value is None:
            merged.pop(key, None)
            smap.forget((*path, key))
        elif key in merged and isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge(merged[key], value, smap, (*path, key))
        else:
            if key in merged:
                smap.forget((*path, key))
            merged[key] = value
    return merged


def _read(path: Path, files: dict[str, Path]) -> tuple[Any, SourceMap]:
    source = display_path(path)
    files[source] = path.resolve()
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows editors may start it with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError([Problem(Location(source), "", f"cannot read recipe: {exc}")]) from None
    return parse_yaml(text, source)


def load_document(path: Path, files: dict[str, Path], chain: tuple[Path, ...] = ()) -> tuple[Any, SourceMap]:
    """A recipe file with its ``extends`` chain merged in, and the locations of every value."""
    data, smap = _read(path, files)
    if not (isinstance(data, dict) and isinstance(data.get("extends"), str)):
        return data, smap
    where = smap.locate(("extends",), fallback=Location(display_path(path)))
    try:
        parent_path = find_recipe(data["extends"], relative_to=path.resolve().parent)
    except UserError as exc:
        raise UserError([Problem(where, "extends", p.message, p.hint) for p in exc.problems]) from None
    if parent_path.resolve() in {p.resolve() for p in (*chain, path)}:
        raise UserError([Problem(where, "extends", f"'{data['extends']}' extends this recipe again (a cycle)")])
    parent, merged_map = load_document(parent_path, files, (*chain, path))
    parent = {k: v for k, v in parent.items() if k != "extends"} if isinstance(parent, dict) else {}
    child = {k: v for k, v in data.items() if k != "extends"}
    merged = merge(parent, child, merged_map)
    merged_map.update(smap)
    return merged, merged_map


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``adapters.chat.r=32`` -> (("adapters", "chat", "r"), 32); the value is read as YAML."""
    key, sep, value = text.partition("=")
    parts = tuple(key.strip().split("."))
    where = Location(f"override '{text}'")
    if not sep or not all(parts):
        raise UserError([Problem(where, "", "an override must look like field.path=value")])
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError([Problem(where, key, f"the value is not valid YAML: {exc}")]) from None
    return parts, parsed


def apply_overrides(data: Any, smap: SourceMap, overrides: Sequence[str]) -> Any:
    """Merge each ``field.path=value`` into ``data``; its locations become the command-line argument."""
    for text in overrides:
        parts, value = parse_override(text)
        patch: Any = value
        for part in reversed(parts):
            patch = {part: patch}
        data = merge(data if isinstance(data, dict) else {}, patch, smap)
        where = Location(f"override '{text}'")
        for i in range(1, len(parts)):
            smap.keys.setdefault(parts[:i], where)
            smap.values.setdefault(parts[:i], where)
        for path in _paths(value, parts):
            smap.keys[path] = smap.values[path] = where
    return data


def _paths(value: Any, prefix: tuple) -> list[tuple]:
    """``prefix`` and the path of everything nested in ``value`` under it."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


def read_recipe(ref: str | Path, overrides: Sequence[str] = ()) -> tuple[Path, Any, SourceMap, dict[str, Path]]:
    """The recipe ``ref`` names, with its ``extends`` chain merged and ``overrides`` applied: its file,
    the document, where each value was written, and every file that contributed (by source name)."""
    path = find_recipe(str(ref))
    files: dict[str, Path] = {}
    raw, smap = load_document(path, files)
    return path, apply_overrides(raw, smap, overrides), smap, files
