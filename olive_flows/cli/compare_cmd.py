"""``olive-flows compare A B``: two packages (or kept versions) side by side, in the terminal and as an
HTML page: task metrics, perplexity, speed, sizes and sample answers."""

from __future__ import annotations

import argparse
from pathlib import Path

from olive_flows.files import write_text_atomic
from olive_flows.layout import is_package
from olive_flows.problems import UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compare", help="compare two packages or kept versions side by side")
    parser.add_argument("a", help="a package folder (a recipe's current one, or one under _versions/)")
    parser.add_argument("b", help="the package folder to compare it with")
    parser.add_argument("--html", default="compare.html", metavar="FILE", help="the HTML page (default: compare.html)")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score both again now, on the held-out rows the recipe's output folder holds (the latest run's)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from olive_flows.console import Console
    from olive_flows.evaluate.compare import compare, page, rescored, text, version_at

    for folder in (args.a, args.b):
        if not is_package(Path(folder)):
            raise UserError(
                f"{folder}: not a package folder (no manifest.json); `olive-flows versions RECIPE` lists them"
            )
    a, b = version_at(Path(args.a)), version_at(Path(args.b))
    if args.rescore:
        a, b = rescored(a, b, Console())
    result = compare(a, b, rescore=args.rescore)
    print(text(result))
    write_text_atomic(Path(args.html), page(result))
    print(f"\nwrote {args.html}")
    return 0
