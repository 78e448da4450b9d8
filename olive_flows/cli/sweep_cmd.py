"""``olive-flows sweep RECIPE [--trials N] [--jobs J] [--package-best]``: search the fields the recipe's
``sweep`` block names, print the leaderboard, write the report and the best recipe."""

from __future__ import annotations

import argparse

from olive_flows.paths import display_path
from olive_flows.problems import Location, Problem, UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("sweep", help="search training settings (the recipe's sweep block) with Optuna")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field")
    parser.add_argument("--trials", type=int, help="finished trials the study should have (default: sweep.trials)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trials at once, each in a process of its own with its own output folder under _work/sweep/ "
        "(default 1: trials one after another in the recipe's folder, sharing its data splits and Olive's cache)",
    )
    parser.add_argument(
        "--storage", help="an Optuna storage URL shared by several sweeps (default: SQLite in _work/sweep/)"
    )
    parser.add_argument("--package-best", action="store_true", help="then run the best recipe to build its package")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face hubs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --jobs' processes
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError([Problem(Location("--jobs"), "", f"--jobs must be at least 1, not {args.jobs}")])
    from olive_flows.sweep.report import best_trial, report_html, write_best_recipe
    from olive_flows.sweep.study import leaderboard_text, run_sweep, run_workers

    if args.jobs > 1:
        result = run_workers(args.recipe, args.overrides, args.jobs, args.trials, args.storage, args.offline)
    else:
        result = run_sweep(args.recipe, args.overrides, trials=args.trials, storage=args.storage, offline=args.offline)
    if args.worker:
        return 0
    study, sweep = result.study, result.sweep
    print(leaderboard_text(study, sweep))
    report = result.folder / "report.html"
    report.write_text(report_html(study, sweep, f"sweep of {study.study_name}"), encoding="utf-8")
    print(f"study: {display_path(result.folder)} ({len(study.trials)} trials); report: {display_path(report)}")
    best = best_trial(study)
    if best is None:
        print("no trial finished: no best recipe")
        return 3
    header = f"The best trial ({best.number}, {sweep.metric} {best.value:.4f}) of `olive-flows sweep {args.recipe}`."
    path = write_best_recipe(args.recipe, study.study_name, best.params, args.overrides, header)
    print(
        f"best recipe: {display_path(path)} (trial {best.number}); build it with: olive-flows run {display_path(path)}"
    )
    if args.package_best:
        from olive_flows.pipeline import run_recipe
        from olive_flows.validate.load import load_recipe

        run_recipe(load_recipe(path), offline=args.offline)
    return 0
