"""``olive-flows chat PACKAGE``: talk to a package, switching adapters as you go.

One-shot with --prompt, or interactive. In a session: /adapter NAME switches to an adapter,
/base to the base model, /reset forgets the conversation, /quit ends. Answers stream as they
are generated, with the model's chat template applied to the conversation so far.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from olive_flows.evaluate.runtime import Sampling
from olive_flows.layout import is_package
from olive_flows.problems import UserError

HELP = "commands: /adapter NAME, /base, /reset, /quit"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("chat", help="chat with a package, with or without an adapter")
    parser.add_argument("package", help="a package folder, or a recipe (its first built package)")
    parser.add_argument("--adapter", help="adapter to start with (default: the base model)")
    parser.add_argument("--prompt", help="answer this one prompt and exit")
    parser.add_argument("--system", help="system message for the conversation")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (the default) answers greedily")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep this share of probability")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--seed", type=int, help="seed for sampling (default: a new one per answer)")
    parser.set_defaults(handler=run)


def package_folder(ref: str) -> Path:
    """The package ``ref`` names: a package folder, or a recipe's first built package."""
    if is_package(Path(ref)):
        return Path(ref)
    from olive_flows.cli.eval_cmd import packages_of

    return packages_of(ref, [])[0]


def sampling_of(args: argparse.Namespace) -> Sampling:
    """The sampling options given, checked as ``serve`` checks a request's."""
    if not 0 <= args.temperature <= 2:
        raise UserError(f"--temperature must be between 0 and 2, not {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be above 0 and at most 1, not {args.top_p}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be 0 or more, not {args.top_k}")
    return Sampling(args.temperature, args.top_p, args.top_k, args.seed)


def run(args: argparse.Namespace) -> int:
    from olive_flows.evaluate.runtime import PackageRuntime

    sampling = sampling_of(args)
    runtime = PackageRuntime(package_folder(args.package))
    adapter = args.adapter
    if adapter and adapter not in runtime.adapter_names:
        raise UserError(f"no adapter '{adapter}' in this package; adapters: {', '.join(runtime.adapter_names)}")
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []

    def answer(text: str) -> None:
        history.append({"role": "user", "content": text})
        pieces = []
        for piece in runtime.stream(history, adapter, args.max_new_tokens, sampling):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(pieces).strip()})

    if args.prompt is not None:
        answer(args.prompt)
        return 0
    print(f"adapters: {', '.join(runtime.adapter_names) or 'none'}; {HELP}", file=sys.stderr)
    while True:
        try:
            line = input(f"[{adapter or 'base'}] > ").strip()
        except EOFError:
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/base":
            adapter = None
        elif line.startswith("/adapter"):
            name = line.removeprefix("/adapter").strip()
            if name in runtime.adapter_names:
                adapter = name
            else:
                print(f"no adapter '{name}'; adapters: {', '.join(runtime.adapter_names)}", file=sys.stderr)
        elif line == "/reset":
            history = history[:1] if args.system else []
        elif line.startswith("/"):
            print(HELP, file=sys.stderr)
        else:
            answer(line)
