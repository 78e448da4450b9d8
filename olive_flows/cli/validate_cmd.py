"""``olive-flows validate RECIPE... [FIELD=VALUE ...]``: check recipes without importing torch or running anything.

Every problem of every recipe is printed, errors and warnings, with file, line and field. What
this machine lacks to run a recipe (a CUDA GPU for QLoRA, say) is reported as a warning: the
recipe itself is fine, and `olive-flows run` stops on it before training.
"""

from __future__ import annotations

import argparse
import sys

from olive_flows.problems import UserError
from olive_flows.validate.environment import environment_problems
from olive_flows.validate.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("validate", help="check recipes against the schema and the rules")
    parser.add_argument(
        "recipes", nargs="+", metavar="RECIPE", help="recipe files or built-in names; FIELD=VALUE items override fields"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate every recipe given; report all problems of all of them."""
    recipes = [r for r in args.recipes if "=" not in r]
    overrides = [r for r in args.recipes if "=" in r]
    failed = []
    for ref in recipes:
        try:
            recipe = load_recipe(ref, overrides)
        except UserError as exc:
            print(exc.text, file=sys.stderr)
            failed.append(ref)
            continue
        print(f"{recipe.source}: ok ({recipe.name})")
        for warning in recipe.warnings:
            print(warning.format(), file=sys.stderr)
        for problem in environment_problems(recipe):
            print(f"{problem.format()} (on this machine; `run` stops here)", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(recipes)} recipes have problems", file=sys.stderr)
        return UserError.exit_code
    return 0
