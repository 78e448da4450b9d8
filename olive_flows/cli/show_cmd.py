"""``olive-flows show RECIPE [FIELD=VALUE ...]``: the fully resolved recipe, every default filled in."""

from __future__ import annotations

import argparse

import yaml

from olive_flows.validate.load import load_recipe
from olive_flows.validate.schema import in_schema_order


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("show", help="print the resolved recipe with every default filled in")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    print(f"# {recipe.source}, resolved (extends merged, overrides applied, defaults filled in)")
    print(yaml.safe_dump(in_schema_order(recipe.data), sort_keys=False, allow_unicode=True, width=110), end="")
    return 0
