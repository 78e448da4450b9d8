"""``olive-flows eval RECIPE|PACKAGE``: evaluate packages again and rewrite eval.json and the report.

A run evaluates its packages already; this re-runs the evaluation on existing packages (after
changing evaluation settings, or on another machine). It needs the package folder and, beside it,
``_data/`` (the held-out rows) and ``_peft/`` (for the PyTorch side), as a run leaves them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from olive_flows.layout import EVAL, MANIFEST, REPORT_HTML, REPORT_MD, is_package
from olive_flows.paths import display_path
from olive_flows.problems import UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="evaluate packages: task metrics, perplexity, parity, speed, report")
    parser.add_argument("target", metavar="RECIPE|PACKAGE", help="a recipe (its packages) or a package folder")
    parser.add_argument(
        "overrides", nargs="*", metavar="FIELD=VALUE", help="override evaluation settings, e.g. evaluation.max_rows=20"
    )
    parser.set_defaults(handler=run)


def packages_of(target: str, overrides: list[str]) -> list[Path]:
    """The package folders ``target`` names: itself, or every built package of a recipe."""
    folder = Path(target)
    if is_package(folder):
        return [folder]
    from olive_flows.layout import Workspace
    from olive_flows.validate.load import load_recipe

    recipe = load_recipe(target, overrides)
    workspace = Workspace.of(recipe)
    found = [workspace.package(t) for t in recipe.targets if is_package(workspace.package(t))]
    if not found:
        raise UserError(f"{target}: no built package yet; run `olive-flows run {target}` first")
    return found


def evaluate_folder(package: Path, overrides: list[str]) -> Path:
    """Evaluate one package folder in place, as a run does, and re-hash its manifest; return the log."""
    from olive_flows.console import Console
    from olive_flows.evaluate.assess import assess_package, package_recipe
    from olive_flows.files import write_json
    from olive_flows.layout import Workspace
    from olive_flows.package.manifest import EVALUATION_OVERRIDES, file_table

    manifest = json.loads((package / MANIFEST).read_text(encoding="utf-8"))
    recipe = package_recipe(package, overrides)
    workspace = Workspace(package.resolve().parent)
    with workspace.locked():
        log = workspace.new_run("-eval") / "logs" / f"eval-{manifest['target']['name']}.log"
        assess_package(recipe, package, manifest, workspace=workspace, console=Console(), log=log)
        manifest["files"] = file_table(package)
        manifest.pop(EVALUATION_OVERRIDES, None)
        evaluation = [o for o in overrides if o.startswith("evaluation.")]
        if evaluation:  # a later run evaluates again with the recipe's settings (manifest.up_to_date)
            manifest[EVALUATION_OVERRIDES] = evaluation
        write_json(package / MANIFEST, manifest)
    return log


def run(args: argparse.Namespace) -> int:
    for package in packages_of(args.target, args.overrides):
        log = evaluate_folder(package, args.overrides)
        print(f"{display_path(package)}: {EVAL}, {REPORT_MD}, {REPORT_HTML}; log: {display_path(log)}")
    return 0
