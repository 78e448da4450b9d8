"""``olive-flows new NAME --from RECIPE``: copy a recipe to ``NAME.yaml`` to edit.

The copy keeps the original's comments and layout. Its name is set to NAME, and relative paths
(data files, a local model folder, ``extends``, the editor's $schema line) are rewritten so they
still point at the same files from the new location. The copy is validated before the command
returns; nothing is left behind when that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from olive_flows.files import write_text_atomic
from olive_flows.paths import SCHEMA_PATH, display_path
from olive_flows.problems import Location, Problem, UserError
from olive_flows.recipe.read import find_recipe
from olive_flows.recipe.source import parse_yaml
from olive_flows.validate.load import load_recipe
from olive_flows.validate.schema import recipe_schema

PLAIN_SCALAR = re.compile(r"^[\w./:-]+$")
SCHEMA_COMMENT = re.compile(r"(\$schema=)(\S+)")
RUN_COMMENT = re.compile(r"^(#\s*Run:\s*).*$", re.MULTILINE)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("new", help="copy a recipe to NAME.yaml to edit")
    parser.add_argument("name", help="name of the new recipe (also its file name)")
    parser.add_argument("--from", dest="source", required=True, metavar="RECIPE", help="recipe to copy")
    parser.add_argument("--dir", type=Path, default=Path("."), help="folder to write NAME.yaml to (default: here)")
    parser.set_defaults(handler=run)


def _scalar(text: str) -> str:
    return text if PLAIN_SCALAR.match(text) else json.dumps(text)


def _relocated(value: str, old_dir: Path, new_dir: Path) -> str | None:
    """``value`` rewritten relative to ``new_dir`` when it is a relative path to something that exists."""
    if Path(value).is_absolute() or value.startswith("~") or not (old_dir / value).exists():
        return None
    return os.path.relpath((old_dir / value).resolve(), new_dir.resolve())


def run(args: argparse.Namespace) -> int:
    pattern = recipe_schema()["$defs"]["safe_name"]["pattern"]
    if not re.match(pattern, args.name):
        raise UserError([Problem(Location("command line"), "name", recipe_schema()["$defs"]["safe_name"]["x-message"])])
    source = find_recipe(args.source)
    target = args.dir / f"{args.name}.yaml"
    if target.exists():
        raise UserError([Problem(Location(display_path(target)), "", "already exists; choose another name or --dir")])
    text = source.read_text(encoding="utf-8")
    data, smap = parse_yaml(text, str(source))
    old_dir, new_dir = source.resolve().parent, args.dir

    edits: dict[tuple, str] = {("name",): _scalar(args.name)}
    relative_fields = [("extends",), ("model", "id")]
    for name, spec in (data.get("datasets") or {}).items():
        relative_fields += [("datasets", name, key) for key in ("path", "eval_path") if key in (spec or {})]
    for path in relative_fields:
        value = data
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        moved = _relocated(value, old_dir, new_dir) if isinstance(value, str) else None
        if moved is not None:
            edits[path] = _scalar(moved)

    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    spans = []
    for path, replacement in edits.items():
        start, end = smap.values.get(path), smap.ends.get(path)
        if start and end:
            spans.append(
                (offsets[start.line - 1] + start.column - 1, offsets[end.line - 1] + end.column - 1, replacement)
            )
    for begin, finish, replacement in sorted(spans, reverse=True):
        text = text[:begin] + replacement + text[finish:]
    schema_ref = os.path.relpath(SCHEMA_PATH, new_dir.resolve())
    text = SCHEMA_COMMENT.sub(lambda m: m.group(1) + schema_ref, text, count=1)
    text = RUN_COMMENT.sub(lambda m: m.group(1) + f"olive-flows run {display_path(target)}", text, count=1)

    write_text_atomic(target, text)
    try:
        load_recipe(target)
    except UserError:
        target.unlink()
        raise
    print(f"wrote {display_path(target)}; edit it, then: olive-flows run {display_path(target)}")
    return 0
