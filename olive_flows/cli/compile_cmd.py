"""``olive-flows compile RECIPE [FIELD=VALUE ...] [--processes N]``: write the Olive workflow configs `run` would execute.

Nothing is trained or exported and the built-in model is not prepared. Two things are written, and
listed: the data split files (the configs name them) and the configs. Both are byte-stable between
runs of the same recipe and data.
"""

from __future__ import annotations

import argparse

from olive_flows.cli import positive
from olive_flows.paths import display_path
from olive_flows.validate.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compile", help="write the Olive workflow configs without running them")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field")
    parser.add_argument(
        "--processes", type=positive, default=1, metavar="N", help="as run --processes N would train (default 1)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    from olive_flows.compile.plan import plan_recipe
    from olive_flows.console import Console

    plan = plan_recipe(recipe, Console(), processes=args.processes)
    for path in plan.written:
        print(f"wrote {display_path(path)}{'/ (train, eval and test split files)' if path.is_dir() else ''}")
    return 0
