"""``olive-flows eval RECIPE|PACKAGE``: evaluate packages again and rewrite eval.json and the report.

A run evaluates its packages already; this re-runs the evaluation on existing packages (after
changing evaluation settings, or on another machine). It needs the package folder and, beside it,
``_data/`` (the held-out rows) and ``_peft/`` (for the PyTorch side), as a run leaves them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from olive_flows import metadata
from olive_flows.package.manifest import MANIFEST, RESOLVED_RECIPE
from olive_flows.paths import display_path
from olive_flows.validate.problems import UserError


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
    if (folder / MANIFEST).is_file():
        return [folder]
    from olive_flows.recipe.load import load_recipe
    from olive_flows.workspace import Workspace

    recipe = load_recipe(target, overrides)
    found = [
        Workspace.of(recipe).package(t)
        for t in recipe.targets
        if (Workspace.of(recipe).package(t) / MANIFEST).is_file()
    ]
    if not found:
        raise UserError(f"{target}: no built package yet; run `olive-flows run {target}` first")
    return found


def evaluate_folder(package: Path, overrides: list[str]) -> None:
    """Evaluate one package folder in place and re-hash its manifest."""
    from olive_flows.data.prepare import scored_split
    from olive_flows.evaluate.check import check_package
    from olive_flows.evaluate.evaluation import EvalSubject, read_rows
    from olive_flows.files import write_json
    from olive_flows.package.manifest import file_table
    from olive_flows.recipe.load import apply_overrides
    from olive_flows.recipe.model import Recipe
    from olive_flows.recipe.source import SourceMap
    from olive_flows.run.console import Console
    from olive_flows.validate.schema import with_defaults

    manifest = json.loads((package / MANIFEST).read_text())
    resolved = json.loads((package / RESOLVED_RECIPE).read_text())
    data = with_defaults(apply_overrides(resolved, SourceMap(), [o for o in overrides if o.startswith("evaluation.")]))
    recipe = Recipe(data, data, display_path(package / RESOLVED_RECIPE), SourceMap())
    adapters = list(manifest["adapters"])
    rows = {}
    for adapter in adapters:
        audit = package.parent / "_data" / adapter
        if not audit.is_dir():
            raise UserError(f"{display_path(audit)} is missing: the held-out rows of adapter '{adapter}' are needed")
        split = scored_split(json.loads((audit / "stats.json").read_text())["rows"])
        rows[adapter] = read_rows(audit / f"{split}.jsonl", data["evaluation"]["max_rows"])
    peft = {a: package.parent / "_peft" / a for a in adapters if (package.parent / "_peft" / a).is_dir()}
    subject = EvalSubject(
        rows=rows,
        dataset_of={a: manifest["adapters"][a]["dataset"]["name"] for a in adapters},
        precision=manifest["target"]["precision"],
        peft=peft,
        model_path=manifest["base_model"].get("path"),
        trust_remote_code=data["model"]["trust_remote_code"],
    )
    provider = metadata.target_profile(manifest["target"]["provider"])["genai_provider"]
    check_package(
        recipe,
        manifest["target"]["name"],
        package,
        manifest,
        subject=subject,
        genai_provider=provider,
        console=Console(),
        log=package.parent / "_work" / "logs" / f"eval-{manifest['target']['name']}.log",
    )
    manifest["files"] = file_table(package)
    write_json(package / MANIFEST, manifest)


def run(args: argparse.Namespace) -> int:
    for package in packages_of(args.target, args.overrides):
        evaluate_folder(package, args.overrides)
        print(f"{display_path(package)}: eval.json, report.md, report.html")
    return 0
