"""``olive-flows run RECIPE [FIELD=VALUE ...]``: train, export, package and check a recipe."""

from __future__ import annotations

import argparse

from olive_flows.validate.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="train every adapter and write one package per target")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument(
        "overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field, e.g. adapters.chat.r=32"
    )
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face hubs")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    from olive_flows.pipeline import run_recipe  # heavy imports only once the recipe is valid

    run_recipe(recipe, offline=args.offline)
    return 0
