"""``olive-flows export RECIPE --target NAME``: package already trained adapters for one more target.

The recipe is restricted to that target (one of its own, or a new one named after a device) and run
again. Training passes are identical to the ones already run, so Olive's cache returns the trained
adapters and only the export, packaging and checks run. Other targets' packages are left alone.
"""

from __future__ import annotations

import argparse

from olive_flows import metadata
from olive_flows.layout import Workspace
from olive_flows.problems import UserError
from olive_flows.validate.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a trained recipe for one target, reusing its training")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument(
        "--target",
        required=True,
        help="one of the recipe's targets, or a device (cpu, gpu, dml, npu) for a new target of that name",
    )
    parser.add_argument("--precision", help="precision of a new target (default: the schema's default, int4)")
    parser.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face hubs")
    parser.set_defaults(handler=run)


def target_overrides(recipe_targets: list[str], name: str, precision: str | None) -> list[str]:
    """Overrides that leave only target ``name`` in the recipe, creating it when it names a device;
    a new precision drops the options of the old one."""
    devices = list(metadata.load("targets")["device_default_provider"])
    if name not in recipe_targets and name not in devices:
        raise UserError(
            f"--target {name}: not a target of the recipe ({', '.join(recipe_targets)}) nor a device ({', '.join(devices)})"
        )
    overrides = [f"targets.{other}=null" for other in recipe_targets if other != name]
    if name not in recipe_targets:
        overrides.append(f"targets.{name}.device={name}")
    if precision:
        overrides.append(f"targets.{name}.precision={precision}")
        if precision != "int4":  # int4 options would be refused ("no effect") at another precision
            overrides.append(f"targets.{name}.int4=null")
    return overrides


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    untrained = [a for a in recipe.adapters if not Workspace.of(recipe).peft(a).is_dir()]
    if untrained:
        raise UserError(
            f"{recipe.source}: adapters {', '.join(untrained)} are not trained yet; "
            f"run `olive-flows run {args.recipe}` first (export reuses the trained adapters)"
        )
    recipe = load_recipe(
        args.recipe, [*args.overrides, *target_overrides(list(recipe.targets), args.target, args.precision)]
    )
    from olive_flows.console import Console
    from olive_flows.pipeline import run_recipe  # heavy imports only once the recipe is valid

    console = Console()
    return run_recipe(recipe, offline=args.offline, console=console).exit_code(console)
