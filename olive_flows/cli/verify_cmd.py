"""``olive-flows verify PACKAGE``: is this folder exactly the package that was built, and does it run?

Recomputes every file's sha256 against manifest.json (missing, changed and unexpected files are
named), then loads the model and each adapter and generates one token with each. Exit code 0 when
all of it holds, 5 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from olive_flows.files import sha256_file
from olive_flows.layout import MANIFEST
from olive_flows.paths import display_path
from olive_flows.problems import UserError

VERIFY_FAILED = 5


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("verify", help="check a package's files against its manifest and run each adapter")
    parser.add_argument("package", help="a package folder")
    parser.set_defaults(handler=run)


def file_problems(package: Path, manifest: dict) -> list[str]:
    """Every file that is missing, differs from the manifest, or is not listed in it."""
    problems = []
    listed = manifest.get("files", {})
    for name, entry in sorted(listed.items()):
        path = package / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{name}: size {path.stat().st_size} bytes, manifest says {entry['size']} (truncated?)")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: content differs from the manifest (sha256 mismatch)")
    for path in sorted(package.rglob("*")):
        name = path.relative_to(package).as_posix()
        if path.is_file() and name != MANIFEST and name not in listed:
            problems.append(f"{name}: not in the manifest")
    return problems


def runtime_problems(package: Path, adapters: list[str]) -> list[str]:
    """Load the model and every adapter and generate one token with each; what failed."""
    from olive_flows.evaluate.runtime import PackageRuntime

    try:
        runtime = PackageRuntime(package)
    except Exception as exc:  # onnxruntime-genai reports a broken model as a plain RuntimeError
        return [f"model does not load: {exc}"]
    problems = []
    for adapter in [None, *adapters]:
        try:
            runtime.generate([{"role": "user", "content": "Hi"}], adapter, max_new_tokens=1)
        except Exception as exc:
            problems.append(f"{adapter or 'base model'}: generation failed: {exc}")
    missing = sorted(set(adapters) - set(runtime.adapter_names))
    return problems + [f"adapter {name}: not loaded" for name in missing]


def run(args: argparse.Namespace) -> int:
    package = Path(args.package)
    try:
        manifest = json.loads((package / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{display_path(package)}: no {MANIFEST}; not an olive-flows package") from None
    except ValueError as exc:
        print(f"{display_path(package / MANIFEST)}: unreadable ({exc})")
        return VERIFY_FAILED
    problems = file_problems(package, manifest)
    if not problems:
        problems = runtime_problems(package, list(manifest.get("adapters", {})))
    for problem in problems:
        print(f"{display_path(package)}/{problem}")
    if problems:
        print(f"{display_path(package)}: NOT OK ({len(problems)} problems)")
        return VERIFY_FAILED
    print(
        f"{display_path(package)}: OK ({len(manifest['files'])} files match the manifest; base and "
        f"{len(manifest.get('adapters', {}))} adapters generate)"
    )
    return 0
