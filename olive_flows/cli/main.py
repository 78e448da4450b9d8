"""Entry point of the ``olive-flows`` command: dispatch to a subcommand, map failures to exit codes
(EXIT_CODES, also shown by --help)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from olive_flows import __version__
from olive_flows.cli import (
    chat_cmd,
    compare_cmd,
    compile_cmd,
    data_cmd,
    eval_cmd,
    export_cmd,
    list_cmd,
    new_cmd,
    run_cmd,
    serve_cmd,
    show_cmd,
    sweep_cmd,
    validate_cmd,
    verify_cmd,
    versions_cmd,
)
from olive_flows.problems import UserError

DESCRIPTION = (
    "Fine-tune small language models with LoRA adapters from a YAML recipe and export them as one "
    "multi-adapter ONNX package per device. Start with: olive-flows run quickstart"
)
EXIT_CODES = (
    "exit codes: 0 success; 2 a mistake in the recipe, its data or the command line; 3 an Olive pass failed; "
    "4 the package failed its checks; 5 verify found a damaged package; 6 another run holds the recipe's "
    "output folder, or (Windows) a program holds open the package a run would replace; 7 the base model cannot be downloaded; 8 a new package was not promoted (promote.when: better); "
    "9 a process of a run with several processes died or failed; 10 every package was built, and one or more "
    "could not be run on this machine (not verified here); 130 interrupted"
)
SUBCOMMANDS = (
    run_cmd,
    export_cmd,
    validate_cmd,
    show_cmd,
    compile_cmd,
    list_cmd,
    new_cmd,
    data_cmd,
    eval_cmd,
    chat_cmd,
    serve_cmd,
    verify_cmd,
    versions_cmd,
    compare_cmd,
    sweep_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olive-flows", description=DESCRIPTION, epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"olive-flows {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(exc.text, file=sys.stderr)
        count = len(exc.problems)
        if count > 1:
            print(f"{count} problems", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (olive-flows list | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # failures of a pass or of the package carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return code
