"""``olive-flows list``: the built-in recipes with their devices, expected time and description."""

from __future__ import annotations

import argparse

from olive_flows.problems import UserError
from olive_flows.recipe.catalog import builtin_recipes, header
from olive_flows.validate.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list the built-in recipes")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rows = [("recipe", "targets", "time", "description")]
    for name, path in builtin_recipes().items():
        try:
            recipe = load_recipe(path)
        except UserError:
            rows.append((name, "?", "?", f"invalid: run `olive-flows validate {name}`"))
            continue
        targets = ",".join(f"{t}:{spec['device']}/{spec['precision']}" for t, spec in recipe.targets.items())
        rows.append((name, targets, header(path).get("time", "?"), recipe.data["description"]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])
    return 0
