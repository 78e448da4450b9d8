"""``olive-flows serve PACKAGE|RECIPE``: the package behind an OpenAI-compatible HTTP API.

The base model is served as ``<recipe>``, each adapter as ``<recipe>:<adapter>``; the chat page is
at ``/``. Loopback only unless --host says otherwise; another address without an API key is
served, with a warning. SIGINT or SIGTERM stop accepting, give requests in flight a few seconds
and exit 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys

from olive_flows.cli import positive
from olive_flows.problems import UserError

SHUTDOWN_GRACE_S = 3  # requests still generating after this are cancelled


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve a package behind an OpenAI-compatible API")
    parser.add_argument("package", help="a package folder, or a recipe (its first built package)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--threads",
        type=positive,
        help="onnxruntime threads per server process (default: the package's, one per physical core, "
        "shared out between --workers)",
    )
    parser.add_argument(
        "--parallel", type=positive, default=4, help="requests generating at once in each process (default 4)"
    )
    parser.add_argument(
        "--max-queue", type=_natural, default=16, help="requests waiting beyond those; more get a 503 (default 16)"
    )
    parser.add_argument(
        "--workers", type=positive, default=1, help="server processes, each with the model loaded (default 1)"
    )
    parser.add_argument("--api-key-env", metavar="VAR", help="require the API key held in environment variable VAR")
    parser.add_argument("--log", metavar="FILE", help="append each exchange and rating to FILE as JSON lines")
    parser.set_defaults(handler=run)


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def threads_per_worker(workers: int) -> int | None:
    """The physical cores shared out between ``workers`` server processes, each of which would otherwise
    take one thread per core from the package's settings; None (the package's own) for one process."""
    if workers == 1:
        return None
    import psutil

    return max(1, (psutil.cpu_count(logical=False) or os.cpu_count() or 1) // workers)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from olive_flows.cli.chat_cmd import package_folder
    from olive_flows.serve.app import CONFIG_ENV, Settings

    package = package_folder(args.package)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if not _loopback(args.host) and not api_key:
        print(
            f"warning: serving on {args.host} without an API key: anyone who can reach this address can use "
            "the model (set one with --api-key-env VAR)",
            file=sys.stderr,
        )
    threads = args.threads or threads_per_worker(args.workers)
    settings = Settings(str(package.resolve()), threads, args.parallel, args.max_queue, api_key, args.log)
    os.environ[CONFIG_ENV] = settings.to_env()
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"serving {package} at http://{shown}:{args.port} (OpenAI API under /v1, chat page at /)",
        file=sys.stderr,
    )
    for stop in (signal.SIGINT, signal.SIGTERM):  # uvicorn re-raises the signal once it has shut down
        signal.signal(stop, lambda *_: sys.exit(0))
    uvicorn.run(
        "olive_flows.serve.app:from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        log_level="info",
    )
    return 0
