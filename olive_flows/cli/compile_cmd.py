"""``olive-flows compile RECIPE [FIELD=VALUE ...]``: write the Olive workflow configs `run` would execute.

A dry run: the data is checked and split (the configs name the split files), nothing is trained or
exported, and the built-in model is not prepared. The configs are byte-stable between runs.
"""

from __future__ import annotations

import argparse

from olive_flows.paths import display_path
from olive_flows.recipe.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compile", help="write the Olive workflow configs without running them")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    from olive_flows.compile.plan import plan_recipe
    from olive_flows.run.console import Console

    plan = plan_recipe(recipe, Console())
    for job in plan.jobs:
        print(display_path(plan.workspace.compiled / job.target / f"{job.adapter}.json"))
    return 0
