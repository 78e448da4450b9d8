"""``olive-flows data check RECIPE|FILE``: every bad row with its line, and a summary of the data.

With a recipe, every dataset is checked with its own settings and tokenized as each adapter that
trains on it will be. With a data file, --format, --model and --max-seq-len say how.
Exit code 2 when a dataset has invalid rows and its policy is to fail (on_error: fail).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from olive_flows.data.sources import LOCAL_SUFFIXES
from olive_flows.paths import cache_dir, display_path
from olive_flows.problems import UserError

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="check training data")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="report every bad row and summarize a recipe's datasets or a file")
    check.add_argument("target", metavar="RECIPE|FILE", help="a recipe (file or built-in name) or a data file")
    check.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="recipe overrides")
    check.add_argument("--format", choices=["chat", "instruction", "completion", "text"], help="(file) row format")
    check.add_argument("--table", help="(file) table of a SQLite database")
    check.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"(file) model whose tokenizer to use (default {DEFAULT_MODEL})"
    )
    check.add_argument("--max-seq-len", type=int, default=512, help="(file) max_seq_len to check against (default 512)")
    check.add_argument("--json", type=Path, metavar="PATH", help="also write the summary as JSON")
    check.set_defaults(handler=run)


def _tokenizer(model_id: str, base: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    from olive_flows.models.resolve import BUILTIN_PREFIX

    if model_id.startswith(BUILTIN_PREFIX):
        from olive_flows.capture import output_to
        from olive_flows.models.builtin import materialize

        with output_to(cache_dir() / "logs" / "materialize.log"):
            return AutoTokenizer.from_pretrained(materialize(model_id.removeprefix(BUILTIN_PREFIX)))
    local = base / model_id
    return AutoTokenizer.from_pretrained(
        str(local) if local.is_dir() else model_id, trust_remote_code=trust_remote_code
    )


def _recipe_checks(args: argparse.Namespace) -> list:
    from olive_flows.data.inspection import Tokenization, check_rows
    from olive_flows.data.prepare import records
    from olive_flows.models.resolve import model_ref
    from olive_flows.validate.load import load_recipe

    recipe = load_recipe(args.target, args.overrides)
    ref = model_ref(recipe)
    tokenizer = _tokenizer(ref.id if ref.kind == "builtin" else ref.path, Path.cwd(), ref.trust_remote_code)
    results = []
    adapters = recipe.spec.adapters.values()
    for name, spec in recipe.datasets.items():
        if "mix" in spec:
            continue  # its parts are checked on their own
        users = [a for a in adapters if a.dataset == name or name in (recipe.spec.datasets[a.dataset].mix or {})]
        settings = [Tokenization(f"adapter {a.name}", a.training.max_seq_len, a.training.loss_on) for a in users]
        results.append(check_rows(name, records(recipe, name), spec, tokenizer, settings))
    return results


def _file_checks(args: argparse.Namespace) -> list:
    from olive_flows.data.inspection import Tokenization, check_rows
    from olive_flows.data.sources import iter_local

    path = Path(args.target)
    if not path.is_file():
        raise UserError(f"{args.target}: no such data file")
    tokenizer = _tokenizer(args.model, Path.cwd())
    spec = {"format": args.format}
    settings = [Tokenization("training", args.max_seq_len)]
    return [check_rows(display_path(path), iter_local(path, args.table), spec, tokenizer, settings)]


def _print(result) -> None:
    summary = result.summary
    how = "detected" if result.detected else "declared"
    print(f"{result.name}: format {summary['format']} ({how})")
    print(
        f"  rows: {summary['rows_read']} read, {summary['valid']} valid, {summary['invalid']} invalid, "
        f"{summary['rating_filtered']} below the rating filter, {summary['exact_duplicates']} exact duplicates"
    )
    if summary["ratings"]:
        print("  ratings: " + ", ".join(f"{rating} {count}" for rating, count in summary["ratings"].items()))
    if summary["roles"]:
        print("  messages by role: " + ", ".join(f"{role} {count}" for role, count in summary["roles"].items()))
    changed = {k: v for k, v in summary["cleaning"].items() if v}
    if changed or summary["after_cleaning"] != summary["valid"]:
        print(f"  cleaning: {summary['after_cleaning']} rows left" + "".join(f", {k} {v}" for k, v in changed.items()))
    for label, tokens in summary.items():
        if isinstance(tokens, dict) and "token_length" in tokens:
            lengths = ", ".join(f"{k} {v}" for k, v in tokens["token_length"].items())
            print(
                f"  {label}: tokens per row {lengths}; max_seq_len {tokens['max_seq_len']} truncates "
                f"{tokens['truncated']}, leaves {tokens['dropped_nothing_to_learn']} with nothing to learn (loss on {tokens['loss_on']})"
            )
    for problem in result.problems:
        print(f"  {problem.format()}")
    for note in result.notes:
        print(f"  {note.format()}")
    if result.fails_run:
        print(f"  {len(result.problems)} invalid rows: a run stops here (set on_error: skip to leave them out)")


def run(args: argparse.Namespace) -> int:
    is_file = Path(args.target).suffix.lower() in LOCAL_SUFFIXES
    results = _file_checks(args) if is_file else _recipe_checks(args)
    for result in results:
        _print(result)
    if args.json:
        args.json.write_text(json.dumps({r.name: r.summary for r in results}, indent=2) + "\n", encoding="utf-8")
    failed = [r for r in results if r.fails_run]
    return UserError.exit_code if failed else 0
