"""Turn a recipe reference (a built-in name or a file) and command-line overrides into a Recipe.

Order: parse YAML with positions -> apply overrides -> JSON Schema -> fill defaults -> rules.
Every problem from the schema and the rules is collected and raised together as one UserError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from olive_flows.paths import RECIPES_DIR, display_path
from olive_flows.recipe.model import Recipe
from olive_flows.recipe.source import SourceMap, parse_yaml
from olive_flows.validate.problems import Location, Problem, UserError, did_you_mean
from olive_flows.validate.rules import rule_problems
from olive_flows.validate.schema import schema_problems, with_defaults


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe names and their files (recipes/*.yaml)."""
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"))}


def find_recipe(ref: str) -> Path:
    """The file a recipe reference means: an existing path, else a built-in recipe name."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    builtin = builtin_recipes()
    if ref in builtin:
        return builtin[ref]
    hint = did_you_mean(ref, builtin) or f"built-in recipes: {', '.join(builtin)}"
    raise UserError([Problem(Location(ref), "", "no such recipe file or built-in recipe", hint)])


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``adapters.chat.r=32`` -> (("adapters", "chat", "r"), 32); the value is read as YAML."""
    key, sep, value = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not sep or not all(parts):
        raise UserError(
            [Problem(Location("command line"), "", f"override '{text}' is not of the form field.path=value")]
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError([Problem(Location("command line"), key, f"override value is not valid YAML: {exc}")]) from None
    return parts, parsed


def apply_overrides(data: Any, smap: SourceMap, overrides: Sequence[str]) -> Any:
    """Set each ``field.path=value`` in ``data``; their locations become the command-line argument.

    ``field.path=null`` removes the field instead, so that its default applies again.
    """
    for text in overrides:
        parts, value = parse_override(text)
        where = Location(f"override '{text}'")
        if not isinstance(data, dict):
            data = {}
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                node[part] = {}
                smap.values[parts[: i + 1]] = where
            node = node[part]
        for path in [p for p in smap.values if p[: len(parts)] == parts]:
            del smap.values[path]
        if value is None:  # FIELD=null removes the field, so its schema default applies again
            node.pop(parts[-1], None)
            continue
        node[parts[-1]] = value
        smap.keys[parts] = where
        smap.values[parts] = where
    return data


def load_recipe(ref: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, override, validate and complete a recipe; raise UserError listing every problem."""
    path = find_recipe(str(ref))
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError([Problem(Location(source), "", f"cannot read recipe: {exc}")]) from None
    raw, smap = parse_yaml(text, source)
    raw = apply_overrides(raw, smap, overrides)
    problems = schema_problems(raw, smap, Location(source))
    if problems:
        raise UserError(problems)
    recipe = Recipe(with_defaults(raw), raw, source, path.resolve().parent, smap)
    problems = rule_problems(recipe)
    if problems:
        raise UserError(problems)
    return recipe
