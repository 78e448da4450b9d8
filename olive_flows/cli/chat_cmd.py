"""``olive-flows chat PACKAGE``: talk to a package, switching adapters as you go.

One-shot with --prompt, or interactive. In a session: /adapter NAME switches to an adapter,
/base to the base model, /reset forgets the conversation, /rate N [comment] rates the last answer
(with --log), /quit ends. Answers stream as they are generated, with the model's chat template
applied to the conversation so far. --log FILE appends each answer, and each rating, as
``serve --log`` does: the file is a dataset a recipe can train on, with its rating filter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from olive_flows.evaluate.runtime import Sampling
from olive_flows.layout import MANIFEST, is_package
from olive_flows.problems import UserError

HELP = "commands: /adapter NAME, /base, /reset, /rate N [comment], /quit"


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
    parser.add_argument("--log", metavar="FILE", help="append each answer and rating to FILE (as serve --log)")
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


class ChatLog:
    """``chat --log``: each answer appended as ``serve --log`` appends it, and ``/rate`` ratings."""

    def __init__(self, path: Path, package: Path, sampling: Sampling, max_new_tokens: int):
        from olive_flows.serve.requestlog import RequestLog

        self.file = RequestLog(path)
        self.recipe = json.loads((package / MANIFEST).read_text(encoding="utf-8"))["recipe"]["name"]
        self.sampling = {**sampling.__dict__, "max_tokens": max_new_tokens, "stop": []}
        self.last: str | None = None

    def answered(
        self, messages: list[dict[str, str]], adapter: str | None, prompt: int, completion: int, timings: dict
    ) -> None:
        from olive_flows.serve.requestlog import exchange

        self.last = f"chat-{uuid.uuid4().hex}"
        model = f"{self.recipe}:{adapter}" if adapter else self.recipe
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        finish = "length" if completion >= self.sampling["max_tokens"] else "stop"
        conversation = {"messages": [dict(m) for m in messages]}
        self.file.append(
            exchange(self.last, "chat.completion", model, adapter, conversation, usage, finish, self.sampling, timings)
        )

    def rate(self, text: str) -> str:
        """Rate the last answer from ``/rate N [comment]``; what to tell the user."""
        from olive_flows.serve.requestlog import feedback

        number, _, comment = text.partition(" ")
        if self.last is None:
            return "no answer to rate yet"
        if number not in {"1", "2", "3", "4", "5"}:
            return "usage: /rate N [comment], N from 1 (bad) to 5 (good)"
        self.file.append(feedback(self.last, int(number), comment.strip() or None))
        return f"rated {number}"


def run(args: argparse.Namespace) -> int:
    from olive_flows.evaluate.runtime import PackageRuntime

    sampling = sampling_of(args)
    package = package_folder(args.package)
    runtime = PackageRuntime(package)
    adapter = args.adapter
    if adapter and adapter not in runtime.adapter_names:
        raise UserError(f"no adapter '{adapter}' in this package; adapters: {', '.join(runtime.adapter_names)}")
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []

    log = ChatLog(Path(args.log), package, sampling, args.max_new_tokens) if args.log else None

    def answer(text: str) -> None:
        history.append({"role": "user", "content": text})
        prompt = runtime.prompt_tokens(history)
        started, first, pieces = time.perf_counter(), None, []
        for piece in runtime.decode(prompt, adapter, args.max_new_tokens, sampling):
            first = first or time.perf_counter()
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
        if log:
            timings = {"first_token_s": first and first - started, "total_s": time.perf_counter() - started}
            log.answered(history, adapter, len(prompt), len(pieces), timings)

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
        elif line.startswith("/rate"):
            print(log.rate(line.removeprefix("/rate").strip()) if log else "/rate needs --log FILE", file=sys.stderr)
        elif line.startswith("/"):
            print(HELP, file=sys.stderr)
        else:
            answer(line)
