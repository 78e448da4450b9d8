"""``olive-flows list``: the built-in recipes with their description and devices."""

from __future__ import annotations

import argparse

from olive_flows.recipe.load import builtin_recipes, load_recipe
from olive_flows.validate.problems import UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list the built-in recipes")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name, path in builtin_recipes().items():
        try:
            recipe = load_recipe(path)
        except UserError:
            print(f"{name:<28} (invalid: run `olive-flows validate {name}`)")
            continue
        devices = sorted({t["device"] for t in recipe.targets.values()})
        print(f"{name:<28} {','.join(devices):<10} {recipe.data['description']}")
    return 0
