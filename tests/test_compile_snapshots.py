"""Compiled Olive configs of every built-in recipe, compared with the snapshots in tests/snapshots.

Machine-specific paths are replaced by placeholders. After an intended change of the compiled
output, refresh them with ``UPDATE_SNAPSHOTS=1 pytest tests/test_compile_snapshots.py`` and
review the diff.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

import olive_flows
from olive_flows.compile.plan import plan_recipe
from olive_flows.console import Console
from olive_flows.paths import cache_dir
from olive_flows.recipe.catalog import builtin_recipes
from olive_flows.validate.load import load_recipe

SNAPSHOTS = Path(__file__).parent / "snapshots" / "compile"


def normalized(text: str, output: Path) -> str:
    package = Path(olive_flows.__file__).parent
    return text.replace(str(output), "<OUTPUT>").replace(str(cache_dir()), "<CACHE>").replace(str(package), "<PACKAGE>")


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_compiled_configs_match_snapshots(name, tmp_path):
    recipe = load_recipe(name, [f"output.dir={tmp_path}"])
    plan = plan_recipe(recipe, Console(io.StringIO()))
    produced = {f"{job.target}/{job.adapter}.json": normalized(job.to_json(), tmp_path) for job in plan.jobs}
    folder = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS"):
        for relative, text in produced.items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_text(text, encoding="utf-8")
    stored = {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.json"))}
    assert produced == stored
