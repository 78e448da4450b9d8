"""A recipe as every later step sees it: read, checked against the schema and the rules, completed.

Order: read (recipe/read.py: YAML with positions, ``extends``, overrides) -> JSON Schema -> fill
defaults -> rules. Every problem from the schema and the rules is collected and raised together as
one UserError; warnings are kept on the Recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from olive_flows.paths import display_path
from olive_flows.problems import Location, UserError
from olive_flows.recipe.model import Recipe
from olive_flows.recipe.read import read_recipe
from olive_flows.validate.rules import rule_problems
from olive_flows.validate.schema import schema_problems, with_defaults


def load_recipe(ref: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, merge, override, validate and complete a recipe; raise UserError listing every problem."""
    path, raw, smap, files = read_recipe(ref, overrides)
    source = display_path(path)
    problems = schema_problems(raw, smap, Location(source))
    # Rules still run on a recipe that broke the schema, but say nothing more about a field the
    # schema already flagged: one mistake, one message.
    data = with_defaults(raw) if isinstance(raw, dict) else {}
    recipe = Recipe(data, raw if isinstance(raw, dict) else {}, source, smap, files)
    flagged = {p.field for p in problems}
    problems += [
        p
        for p in rule_problems(recipe, tolerant=bool(problems))
        if not any(p.field == f or p.field.startswith(f + ".") or p.field.startswith(f + "[") for f in flagged)
    ]
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise UserError(errors)
    recipe.warnings = problems
    recipe.spec  # noqa: B018 - built now: a view out of step with the schema fails here, not mid-run
    return recipe
