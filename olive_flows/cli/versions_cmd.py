"""``olive-flows versions RECIPE``: the current package of each target and the earlier ones a run kept
(``output.keep_versions``), newest first, with what tells them apart."""

from __future__ import annotations

import argparse
import time

from olive_flows.layout import Workspace
from olive_flows.package.versions import list_versions
from olive_flows.paths import display_path
from olive_flows.validate.load import load_recipe


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("versions", help="list a recipe's current and earlier packages")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    workspace = Workspace.of(recipe)
    for target in recipe.targets:
        found = list_versions(workspace.package(target), workspace.versions(target))
        print(
            f"{target}: {len(found)} package{'s' if len(found) != 1 else ''}" + ("" if found else " (none built yet)")
        )
        for version in found:
            built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(version.built))
            recipe_sha = version.manifest["recipe"]["sha256"][:8]
            inputs_sha = version.manifest.get("inputs_sha256", "")[:8]
            scores = ", ".join(f"{k} {v}" for k, v in version.headline().items()) or "not evaluated"
            print(f"  {version.label:<25} {built}  recipe {recipe_sha}  inputs {inputs_sha}  {version.size_mb:.0f} MB")
            print(f"  {'':<25} {display_path(version.folder)}: {scores}")
    return 0
